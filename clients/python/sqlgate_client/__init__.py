"""sqlgate's Python client: SQL over gRPC as if the database were local.

>>> from sqlgate_client import Client
>>> with Client("127.0.0.1:50051", timeout=10) as client:
...     with client.session(isolation="serializable") as tx:
...         tx.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", 1, "hi")
...     rows = client.execute("SELECT id, body FROM notes").rows

``AsyncClient`` offers the same for asyncio (``async with client.session()``).
"""

from .aio import AsyncClient, AsyncSession
from .client import Client, Session
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SqlgateError,
    Unauthenticated,
    Unavailable,
)
from ._requests import SessionEnded
from .results import Column, Result
from .values import Json

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncSession",
    "Cancelled",
    "Client",
    "Column",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "Json",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Result",
    "Session",
    "SessionEnded",
    "SqlgateError",
    "Unauthenticated",
    "Unavailable",
]
