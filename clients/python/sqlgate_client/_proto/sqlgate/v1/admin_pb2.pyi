import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetPoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("backend", "max_connections", "min_connections", "open_connections", "idle_connections", "in_use_connections", "waiting", "acquire_timeouts", "open_sessions", "sessions_ended", "acquire_wait_p50", "acquire_wait_p99", "acquire_wait_max", "calls_total", "connections_opened", "connections_closed", "database_reachable", "last_probe_latency", "saturated", "saturation_reason", "open_streams", "streams_refused", "streams_stalled", "calls_in_flight", "calls_shed", "caller_limit_refusals", "callers")
    class SessionsEndedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CallersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CallerLoad
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CallerLoad, _Mapping]] = ...) -> None: ...
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    OPEN_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    IDLE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    IN_USE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    OPEN_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_ENDED_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_WAIT_P50_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_WAIT_P99_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_WAIT_MAX_FIELD_NUMBER: _ClassVar[int]
    CALLS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_OPENED_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_CLOSED_FIELD_NUMBER: _ClassVar[int]
    DATABASE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FIELD_NUMBER: _ClassVar[int]
    SATURATION_REASON_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    STREAMS_STALLED_FIELD_NUMBER: _ClassVar[int]
    CALLS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CALLS_SHED_FIELD_NUMBER: _ClassVar[int]
    CALLER_LIMIT_REFUSALS_FIELD_NUMBER: _ClassVar[int]
    CALLERS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    max_connections: int
    min_connections: int
    open_connections: int
    idle_connections: int
    in_use_connections: int
    waiting: int
    acquire_timeouts: int
    open_sessions: int
    sessions_ended: _containers.ScalarMap[str, int]
    acquire_wait_p50: _duration_pb2.Duration
    acquire_wait_p99: _duration_pb2.Duration
    acquire_wait_max: _duration_pb2.Duration
    calls_total: int
    connections_opened: int
    connections_closed: int
    database_reachable: bool
    last_probe_latency: _duration_pb2.Duration
    saturated: bool
    saturation_reason: str
    open_streams: int
    streams_refused: int
    streams_stalled: int
    calls_in_flight: int
    calls_shed: int
    caller_limit_refusals: int
    callers: _containers.MessageMap[str, CallerLoad]
    def __init__(self, backend: _Optional[str] = ..., max_connections: _Optional[int] = ..., min_connections: _Optional[int] = ..., open_connections: _Optional[int] = ..., idle_connections: _Optional[int] = ..., in_use_connections: _Optional[int] = ..., waiting: _Optional[int] = ..., acquire_timeouts: _Optional[int] = ..., open_sessions: _Optional[int] = ..., sessions_ended: _Optional[_Mapping[str, int]] = ..., acquire_wait_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., acquire_wait_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., acquire_wait_max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., calls_total: _Optional[int] = ..., connections_opened: _Optional[int] = ..., connections_closed: _Optional[int] = ..., database_reachable: _Optional[bool] = ..., last_probe_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., saturated: _Optional[bool] = ..., saturation_reason: _Optional[str] = ..., open_streams: _Optional[int] = ..., streams_refused: _Optional[int] = ..., streams_stalled: _Optional[int] = ..., calls_in_flight: _Optional[int] = ..., calls_shed: _Optional[int] = ..., caller_limit_refusals: _Optional[int] = ..., callers: _Optional[_Mapping[str, CallerLoad]] = ...) -> None: ...

class CallerLoad(_message.Message):
    __slots__ = ("calls", "streams", "sessions")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    calls: int
    streams: int
    sessions: int
    def __init__(self, calls: _Optional[int] = ..., streams: _Optional[int] = ..., sessions: _Optional[int] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "peer", "labels", "state", "started_at", "age", "idle", "current_statement_fingerprint", "statements_executed", "caller", "role", "tags")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATEMENT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_EXECUTED_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    peer: str
    labels: _containers.ScalarMap[str, str]
    state: str
    started_at: _timestamp_pb2.Timestamp
    age: _duration_pb2.Duration
    idle: _duration_pb2.Duration
    current_statement_fingerprint: str
    statements_executed: int
    caller: str
    role: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., peer: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., current_statement_fingerprint: _Optional[str] = ..., statements_executed: _Optional[int] = ..., caller: _Optional[str] = ..., role: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class TerminateSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class TerminateSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
