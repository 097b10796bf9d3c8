import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from sqlgate_client._proto.sqlgate.v1 import value_pb2 as _value_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecuteRequest(_message.Message):
    __slots__ = ("sql", "params", "max_rows")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    max_rows: int
    def __init__(self, sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ..., max_rows: _Optional[int] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("columns", "rows", "rows_affected")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    rows_affected: int
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ..., rows_affected: _Optional[int] = ...) -> None: ...

class BatchStatement(_message.Message):
    __slots__ = ("sql", "params")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[_value_pb2.Value]
    def __init__(self, sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_value_pb2.Value, _Mapping]]] = ...) -> None: ...

class ExecuteBatchRequest(_message.Message):
    __slots__ = ("statements", "max_rows")
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedCompositeFieldContainer[BatchStatement]
    max_rows: int
    def __init__(self, statements: _Optional[_Iterable[_Union[BatchStatement, _Mapping]]] = ..., max_rows: _Optional[int] = ...) -> None: ...

class ExecuteBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ExecuteResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[ExecuteResponse, _Mapping]]] = ...) -> None: ...

class ResultFrame(_message.Message):
    __slots__ = ("metadata", "rows", "stats")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    metadata: ResultMetadata
    rows: RowBatch
    stats: ResultStats
    def __init__(self, metadata: _Optional[_Union[ResultMetadata, _Mapping]] = ..., rows: _Optional[_Union[RowBatch, _Mapping]] = ..., stats: _Optional[_Union[ResultStats, _Mapping]] = ...) -> None: ...

class ResultMetadata(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[_value_pb2.Column]
    def __init__(self, columns: _Optional[_Iterable[_Union[_value_pb2.Column, _Mapping]]] = ...) -> None: ...

class RowBatch(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_value_pb2.Row]
    def __init__(self, rows: _Optional[_Iterable[_Union[_value_pb2.Row, _Mapping]]] = ...) -> None: ...

class ResultStats(_message.Message):
    __slots__ = ("rows_affected", "rows_returned", "elapsed")
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    ROWS_RETURNED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    rows_affected: int
    rows_returned: int
    elapsed: _duration_pb2.Duration
    def __init__(self, rows_affected: _Optional[int] = ..., rows_returned: _Optional[int] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
