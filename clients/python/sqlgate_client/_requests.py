"""The request messages both clients (sync and asyncio) send, and the
reading of a session's answers: one place for the wire protocol."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Any, Union

import grpc
from google.protobuf import duration_pb2

from . import errors
from ._proto.sqlgate.v1 import query_pb2, session_pb2
from .results import Result
from .values import to_values

#: One statement of a batch: its SQL alone, or ``(sql, params)``.
Statement = Union[str, tuple[str, Iterable[Any]]]

_ISOLATION = {
    None: session_pb2.ISOLATION_LEVEL_UNSPECIFIED,
    "read_uncommitted": session_pb2.ISOLATION_LEVEL_READ_UNCOMMITTED,
    "read_committed": session_pb2.ISOLATION_LEVEL_READ_COMMITTED,
    "repeatable_read": session_pb2.ISOLATION_LEVEL_REPEATABLE_READ,
    "serializable": session_pb2.ISOLATION_LEVEL_SERIALIZABLE,
}


def execute_request(sql: str, params: tuple[Any, ...], max_rows: int) -> query_pb2.ExecuteRequest:
    """``Execute``/``ExecuteStream``'s request."""
    return query_pb2.ExecuteRequest(sql=sql, params=to_values(params), max_rows=max_rows)


def batch_request(statements: Iterable[Statement]) -> query_pb2.ExecuteBatchRequest:
    """``ExecuteBatch``'s request from ``sql`` or ``(sql, params)`` items."""
    request = query_pb2.ExecuteBatchRequest()
    for index, statement in enumerate(statements):
        params: Iterable[Any]
        if isinstance(statement, str):
            sql, params = statement, ()
        elif isinstance(statement, (tuple, list)) and len(statement) == 2 and not isinstance(statement[1], (str, bytes)):
            sql, params = statement
        else:
            raise TypeError(
                f"statement {index + 1}: expected sql or (sql, params) with params a sequence, "
                f"e.g. (\"INSERT INTO t VALUES ($1, $2)\", (1, 'x')); got {statement!r:.80}"
            )
        try:
            values = to_values(tuple(params))
        except (TypeError, ValueError) as error:
            raise type(error)(f"statement {index + 1}: {error}") from None
        request.statements.add(sql=sql, params=values)
    return request


def begin_request(
    isolation: str | None, read_only: bool, labels: Mapping[str, str] | None, idle_timeout: float | None
) -> session_pb2.SessionRequest:
    """A session's ``begin``; isolation is e.g. ``"serializable"``."""
    key = isolation.lower().replace(" ", "_").replace("-", "_") if isolation else None
    if key not in _ISOLATION:
        raise ValueError(f"unknown isolation {isolation!r}; one of {sorted(k for k in _ISOLATION if k)}")
    begin = session_pb2.BeginSession(isolation=_ISOLATION[key], read_only=read_only, labels=dict(labels or {}))
    if idle_timeout is not None:
        begin.idle_timeout.CopyFrom(_duration(idle_timeout))
    return session_pb2.SessionRequest(begin=begin)


def session_execute(request_id: int, sql: str, params: tuple[Any, ...], timeout: float | None) -> session_pb2.SessionRequest:
    """A session's ``execute``; ``timeout`` bounds this statement."""
    execute = session_pb2.SessionExecute(request_id=request_id, sql=sql, params=to_values(params))
    if timeout is not None:
        execute.timeout.CopyFrom(_duration(timeout))
    return session_pb2.SessionRequest(execute=execute)


COMMIT = session_pb2.SessionRequest(commit=session_pb2.CommitSession())
ROLLBACK = session_pb2.SessionRequest(rollback=session_pb2.RollbackSession())


class SessionEnded(errors.SqlgateError):
    """The session ended while a request waited (``rolled_back`` arrived:
    idle timeout, ``TerminateSession``, shutdown…); the call's status, read
    after it, usually explains why."""


class Answers:
    """Reads a session's answers for one request at a time."""

    def __init__(self) -> None:
        self.ended = False

    def began(self, answer: session_pb2.SessionResponse | None) -> str:
        """The session id from the first answer."""
        kind = self._kind(answer)
        assert answer is not None
        if kind == "error":
            self.ended = True
            raise errors.from_status(answer.error)
        if kind != "began":
            raise self._protocol(f"expected began, got {kind}")
        return answer.began.session_id

    def result(self, request_id: int, answer: session_pb2.SessionResponse | None, result: Result) -> bool:
        """Adds one answer to ``result``; True once the request is done.
        Raises the request's error, or :class:`SessionEnded`."""
        kind = self._kind(answer)
        assert answer is not None
        if kind in ("committed", "rolled_back"):
            self.ended = True
            raise SessionEnded(grpc.StatusCode.ABORTED, f"the session ended ({kind}) during request {request_id}")
        if answer.request_id != request_id:
            raise self._protocol(f"answer for request {answer.request_id} while waiting for {request_id}")
        if kind == "frame":
            result.add_frame(answer.frame)
            return False
        if kind == "done":
            return True
        if kind == "error":
            raise errors.from_status(answer.error)
        raise self._protocol(f"unexpected {kind}")

    def ending(self, answer: session_pb2.SessionResponse | None, expected: str) -> None:
        """Checks the answer to ``commit``/``rollback``."""
        kind = self._kind(answer)
        assert answer is not None
        self.ended = True
        if kind == "error":
            raise errors.from_status(answer.error)
        if kind != expected:
            raise self._protocol(f"expected {expected}, got {kind}")

    def _kind(self, answer: session_pb2.SessionResponse | None) -> str:
        if answer is None:
            self.ended = True
            raise errors.SqlgateError(grpc.StatusCode.UNKNOWN, "the session stream ended without a status")
        return answer.WhichOneof("response") or "unknown"

    def _protocol(self, message: str) -> errors.SqlgateError:
        self.ended = True
        return errors.SqlgateError(grpc.StatusCode.INTERNAL, f"session protocol: {message}")


def _duration(seconds: float) -> duration_pb2.Duration:
    if seconds <= 0:
        raise ValueError("a timeout must be positive")
    duration = duration_pb2.Duration()
    duration.FromTimedelta(_dt.timedelta(seconds=seconds))
    return duration
