"""Native Python values to sqlgate ``Value`` messages and back.

Each SQL value has one Python type, both ways, so that what a query returns
can be passed back as a parameter unchanged:

============================  ==========================================
Python                        ``Value`` kind
============================  ==========================================
``None``                      ``null_value``
``bool``                      ``bool_value``
``int`` (64-bit range)        ``int_value``
``float``                     ``float_value``
``str``                       ``text_value``
``bytes``                     ``bytes_value``
``decimal.Decimal``           ``decimal_value`` (exact text, never a float)
``datetime`` with a zone      ``timestamp_value`` (returned in UTC)
``datetime`` without zone     ``datetime_value``
``date`` / ``time``           ``date_value`` / ``time_value``
``uuid.UUID``                 ``uuid_value``
``dict`` or ``Json(x)``       ``json_value`` (returned as ``json.loads``)
``list`` / ``tuple``          ``array_value`` (elements may be ``None``)
============================  ==========================================

A JSON document whose top level is a list is passed as ``Json([...])``,
since a bare list is an SQL array.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from ._proto.sqlgate.v1 import value_pb2

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


@dataclass(frozen=True)
class Json:
    """Marks a value to be sent as JSON (needed for a top-level list)."""

    value: Any


def to_value(native: Any) -> value_pb2.Value:
    """Converts one parameter; raises ``TypeError``/``ValueError`` for what
    has no lossless ``Value`` (an int beyond 64 bits, a zoned ``time``…)."""
    if isinstance(native, value_pb2.Value):
        return native
    if native is None:
        return value_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(native, bool):
        return value_pb2.Value(bool_value=native)
    if isinstance(native, int):
        if not INT64_MIN <= native <= INT64_MAX:
            raise ValueError(f"integer {native} does not fit in 64 bits; pass a Decimal")
        return value_pb2.Value(int_value=native)
    if isinstance(native, float):
        return value_pb2.Value(float_value=native)
    if isinstance(native, str):
        return value_pb2.Value(text_value=native)
    if isinstance(native, (bytes, bytearray, memoryview)):
        return value_pb2.Value(bytes_value=bytes(native))
    if isinstance(native, Decimal):
        if not native.is_finite():
            raise ValueError(f"decimal {native} is not a finite number")
        return value_pb2.Value(decimal_value=format(native, "f"))
    if isinstance(native, _dt.datetime):
        if native.tzinfo is None or native.utcoffset() is None:
            return value_pb2.Value(datetime_value=native.isoformat())
        return value_pb2.Value(timestamp_value=_timestamp(native))
    if isinstance(native, _dt.date):
        return value_pb2.Value(date_value=native.isoformat())
    if isinstance(native, _dt.time):
        if native.tzinfo is not None:
            raise ValueError("a time with a zone has no SQL value here; pass a naive time")
        return value_pb2.Value(time_value=native.isoformat())
    if isinstance(native, uuid.UUID):
        return value_pb2.Value(uuid_value=str(native))
    if isinstance(native, Json):
        return value_pb2.Value(json_value=json.dumps(native.value))
    if isinstance(native, dict):
        return value_pb2.Value(json_value=json.dumps(native))
    if isinstance(native, (list, tuple)):
        return value_pb2.Value(array_value=value_pb2.ValueList(values=[to_value(v) for v in native]))
    raise TypeError(f"no sqlgate value for {type(native).__name__}")


def from_value(value: value_pb2.Value) -> Any:
    """Converts one result value to its native Python type."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "decimal_value":
        return Decimal(value.decimal_value)
    if kind == "timestamp_value":
        ts = value.timestamp_value
        return _EPOCH + _dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    if kind == "datetime_value":
        return _dt.datetime.fromisoformat(value.datetime_value)
    if kind == "date_value":
        return _dt.date.fromisoformat(value.date_value)
    if kind == "time_value":
        return _dt.time.fromisoformat(value.time_value)
    if kind == "json_value":
        return json.loads(value.json_value)
    if kind == "uuid_value":
        return uuid.UUID(value.uuid_value)
    if kind == "array_value":
        return [from_value(v) for v in value.array_value.values]
    return getattr(value, kind)


def to_values(params: tuple[Any, ...] | list[Any]) -> list[value_pb2.Value]:
    """Converts positional parameters, naming the one that fails."""
    converted = []
    for index, param in enumerate(params):
        try:
            converted.append(to_value(param))
        except (TypeError, ValueError) as error:
            raise type(error)(f"parameter {index + 1}: {error}") from None
    return converted


def _timestamp(instant: _dt.datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp, exact to the microsecond."""
    delta = instant - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, micros = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)
