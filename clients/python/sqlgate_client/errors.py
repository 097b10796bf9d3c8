"""Typed exceptions built from a gRPC status and its ``google.rpc`` details.

sqlgate answers every failure with a gRPC code plus an ``ErrorInfo``
(``reason``, and ``metadata`` such as ``sqlstate``), a ``BadRequest`` for the
parameter at fault and a ``RetryInfo`` where retrying can help. The same
parsing serves a call's status and a session's in-stream ``error``.

A deadline that expires on the client side carries no details (gRPC ends the
call locally), so ``reason`` is ``None`` there; one that sqlgate enforced
carries ``reason == "DEADLINE_EXCEEDED"``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class SqlgateError(Exception):
    """A call or a session request that sqlgate (or the transport) refused."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        retry_delay: _dt.timedelta | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        #: The gRPC status code.
        self.code = code
        #: sqlgate's (or the database's) message.
        self.message = message
        #: ``ErrorInfo.reason``, e.g. ``DATABASE_ERROR``, ``INVALID_PARAMETER``.
        self.reason = reason
        #: ``ErrorInfo.metadata``: ``sqlstate``, ``statement_index``, ``phase``…
        self.metadata = metadata or {}
        #: ``BadRequest`` field violations as ``(field, description)``.
        self.field_violations = field_violations or []
        #: ``RetryInfo.retry_delay``, when trying again later can help.
        self.retry_delay = retry_delay

    @property
    def sqlstate(self) -> str | None:
        """The database's SQLSTATE, when the database refused the statement."""
        return self.metadata.get("sqlstate")


class InvalidArgument(SqlgateError):
    """Bad SQL, an unknown object, a bad parameter (``INVALID_ARGUMENT``)."""


class AlreadyExists(SqlgateError):
    """A unique constraint was violated (``ALREADY_EXISTS``)."""


class Aborted(SqlgateError):
    """Serialization failure or deadlock: retry the transaction (``ABORTED``)."""


class DeadlineExceeded(SqlgateError):
    """The call's deadline passed (``DEADLINE_EXCEEDED``)."""


class ResourceExhausted(SqlgateError):
    """Pool, limit or result size reached (``RESOURCE_EXHAUSTED``)."""


class Unavailable(SqlgateError):
    """sqlgate or its database cannot be reached (``UNAVAILABLE``)."""


class NotFound(SqlgateError):
    """An unknown session (``NOT_FOUND``)."""


class PermissionDenied(SqlgateError):
    """The caller's role forbids it (``PERMISSION_DENIED``)."""


class Unauthenticated(SqlgateError):
    """No or bad credentials (``UNAUTHENTICATED``)."""


class FailedPrecondition(SqlgateError):
    """The request does not fit the state, e.g. an aborted transaction."""


class Cancelled(SqlgateError):
    """The call was cancelled (``CANCELLED``)."""


_BY_CODE: dict[grpc.StatusCode, type[SqlgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.CANCELLED: Cancelled,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> SqlgateError:
    """The exception for a ``google.rpc.Status`` (a session's ``error``)."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    kwargs: dict[str, Any] = {}
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            kwargs["reason"] = info.reason
            kwargs["metadata"] = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            kwargs["retry_delay"] = retry.retry_delay.ToTimedelta()
    return _BY_CODE.get(code, SqlgateError)(code, status.message, field_violations=violations, **kwargs)


def from_rpc_error(error: grpc.RpcError) -> SqlgateError:
    """The exception for a failed call (sync or asyncio), details included."""
    code = error.code()
    message = error.details() or ""
    for key, value in error.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            return from_status(status)
    return _BY_CODE.get(code, SqlgateError)(code, message)
