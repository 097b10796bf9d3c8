import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from sqlgate_client._proto.sqlgate.v1 import query_pb2 as _query_pb2
from sqlgate_client._proto.sqlgate.v1 import value_pb2 as _value_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IsolationLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISOLATION_LEVEL_UNSPECIFIED: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_READ_UNCOMMITTED: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_READ_COMMITTED: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_REPEATABLE_READ: _ClassVar[IsolationLevel]
    ISOLATION_LEVEL_SERIALIZABLE: _ClassVar[IsolationLevel]
ISOLATION_LEVEL_UNSPECIFIED: IsolationLevel
ISOLATION_LEVEL_READ_UNCOMMITTED: IsolationLevel
ISOLATION_LEVEL_READ_COMMITTED: IsolationLevel
ISOLATION_LEVEL_REPEATABLE_READ: IsolationLevel
ISOLATION_LEVEL_SERIALIZABLE: IsolationLevel

class SessionRequest(_message.Message):
    __slots__ = ("begin", "execute", "commit", "rollback")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    begin: BeginSession
    execute: SessionExecute
    commit: CommitSession
    rollback: RollbackSession
    def __init__(self, begin: _Optional[_Union[BeginSession, _Mapping]] = ..., execute: _Optional[_Union[SessionExecute, _Mapping]] = ..., commit: _Optional[_Union[CommitSession, _Mapping]] = ..., rollback: _Optional[_Union[RollbackSession, _Mapping]] = ...) -> None: ...

class BeginSession(_message.Message):
    __slots__ = ("isolation", "read_only", "labels", "idle_timeout", "first")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    isolation: IsolationLevel
    read_only: bool
    labels: _containers.ScalarMap[str, str]
    idle_timeout: _duration_pb2.Duration
    first: SessionExecute
    def __init__(self, isolation: _Optional[_Union[IsolationLevel, str]] = ..., read_only: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., first: _Optional[_Union[SessionExecute, _Mapping]] = ...) -> None: ...

class SessionExecute(_message.Message):
    __slots__ = ("request_id", "sql", "params", "timeout", "commit_after")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_AFTER_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    timeout: _duration_pb2.Duration
    commit_after: bool
    def __init__(self, request_id: _Optional[int] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., commit_after: _Optional[bool] = ...) -> None: ...

class CommitSession(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackSession(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("request_id", "began", "frame", "done", "committed", "rolled_back", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BEGAN_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    began: SessionBegan
    frame: _query_pb2.ResultFrame
    done: RequestDone
    committed: SessionCommitted
    rolled_back: SessionRolledBack
    error: _status_pb2.Status
    def __init__(self, request_id: _Optional[int] = ..., began: _Optional[_Union[SessionBegan, _Mapping]] = ..., frame: _Optional[_Union[_query_pb2.ResultFrame, _Mapping]] = ..., done: _Optional[_Union[RequestDone, _Mapping]] = ..., committed: _Optional[_Union[SessionCommitted, _Mapping]] = ..., rolled_back: _Optional[_Union[SessionRolledBack, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class SessionBegan(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class RequestDone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionCommitted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionRolledBack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
