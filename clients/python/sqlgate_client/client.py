"""The blocking client: ``Client`` and its ``Session``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from . import _requests, errors
from ._proto.sqlgate.v1 import query_pb2_grpc, session_pb2, session_pb2_grpc
from .results import Result, row_values

_END = object()


class Client:
    """A connection to sqlgate; cheap to share between threads.

    ``timeout`` (seconds) is the default deadline of each call, and of a
    whole session; every method takes its own ``timeout=`` too. Pass
    ``credentials`` (``grpc.ssl_channel_credentials(...)``) for TLS, or a
    ready ``channel``.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        if channel is None:
            channel = (
                grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
            )
        self._channel = channel
        self._timeout = timeout
        self._metadata = tuple(metadata)
        self._query = query_pb2_grpc.QueryStub(channel)
        self._sessions = session_pb2_grpc.SessionsStub(channel)

    def execute(self, sql: str, *params: Any, timeout: float | None = None, max_rows: int = 0) -> Result:
        """Runs one statement (in its own transaction when it writes)."""
        request = _requests.execute_request(sql, params, max_rows)
        try:
            response = self._query.Execute(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        return Result.from_proto(response)

    def stream(self, sql: str, *params: Any, timeout: float | None = None) -> Iterator[tuple[Any, ...]]:
        """Runs one statement and yields its rows as they come; leaving the
        loop early cancels the statement on the database."""
        request = _requests.execute_request(sql, params, 0)
        call = self._query.ExecuteStream(request, timeout=self._deadline(timeout), metadata=self._metadata)
        try:
            for frame in call:
                if frame.WhichOneof("frame") == "rows":
                    for row in frame.rows.rows:
                        yield row_values(row)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        finally:
            call.cancel()

    def batch(self, statements: Iterable[_requests.Statement], *, timeout: float | None = None) -> list[Result]:
        """Runs statements (``sql`` or ``(sql, params)``) in one transaction:
        all commit or none do. One result per statement."""
        request = _requests.batch_request(statements)
        try:
            response = self._query.ExecuteBatch(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        return [Result.from_proto(r) for r in response.results]

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]], *, timeout: float | None = None) -> list[Result]:
        """Runs one statement with many parameter sets, in one transaction."""
        return self.batch(((sql, params) for params in seq_of_params), timeout=timeout)

    def session(
        self,
        *,
        isolation: str | None = None,
        read_only: bool = False,
        labels: Mapping[str, str] | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
    ) -> Session:
        """A server-side transaction, used as ``with client.session() as tx:``:
        it commits when the block succeeds and rolls back when it raises.
        ``timeout`` bounds the whole session."""
        begin = _requests.begin_request(isolation, read_only, labels, idle_timeout)
        return Session(self._sessions, begin, self._deadline(timeout), self._metadata)

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout


class Session:
    """One transaction bound to one ``Attach`` stream (see ``Client.session``).

    The stream is always closed when the ``with`` block ends; a session
    whose stream is dropped is rolled back by sqlgate.
    """

    def __init__(
        self,
        stub: session_pb2_grpc.SessionsStub,
        begin: session_pb2.SessionRequest,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers = _requests.Answers()
        self._next_id = 0
        # One request at a time: its answers are read before the next is
        # sent, whichever thread sends it.
        self._turn = threading.Lock()
        self._requests.put(begin)
        self._call = stub.Attach(iter(self._requests.get, _END), timeout=timeout, metadata=metadata)
        try:
            #: The id sqlgate gave the session (see ``Admin.ListSessions``).
            self.session_id = self._answers.began(self._read())
        except BaseException:
            self.close()
            raise

    def execute(self, sql: str, *params: Any, timeout: float | None = None) -> Result:
        """Runs one statement inside the session; ``timeout`` bounds it."""
        with self._turn:
            return self._execute(sql, params, timeout)

    def _execute(self, sql: str, params: tuple[Any, ...], timeout: float | None) -> Result:
        self._check_open()
        self._next_id += 1
        request_id = self._next_id
        self._requests.put(_requests.session_execute(request_id, sql, params, timeout))
        result = Result()
        try:
            while not self._answers.result(request_id, self._read(), result):
                pass
        except _requests.SessionEnded as ended:
            raise self._final_status() or ended from None
        return result

    def commit(self) -> None:
        """Commits and ends the session."""
        with self._turn:
            self._end(_requests.COMMIT, "committed")

    def rollback(self) -> None:
        """Rolls back and ends the session."""
        with self._turn:
            if self._answers.ended:
                return self.close()
            self._end(_requests.ROLLBACK, "rolled_back")

    def _end(self, request: session_pb2.SessionRequest, expected: str) -> None:
        self._check_open()
        self._requests.put(request)
        try:
            self._answers.ending(self._read(), expected)
        finally:
            self.close()

    def close(self) -> None:
        """Ends the stream; an open transaction is rolled back by sqlgate."""
        if not self._answers.ended:
            self._answers.ended = True
            self._call.cancel()
        self._requests.put(_END)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None and not self._answers.ended:
            self.commit()
            return
        try:
            self.rollback()
        except errors.SqlgateError:
            pass  # the block's own exception says more; the stream is closed anyway
        finally:
            self.close()

    def _read(self) -> session_pb2.SessionResponse | None:
        try:
            return next(self._call)
        except StopIteration:
            return None
        except grpc.RpcError as error:
            self._answers.ended = True
            raise errors.from_rpc_error(error) from None

    def _final_status(self) -> errors.SqlgateError | None:
        try:
            next(self._call)
        except grpc.RpcError as error:
            return errors.from_rpc_error(error)
        except StopIteration:
            pass
        finally:
            self.close()
        return None

    def _check_open(self) -> None:
        if self._answers.ended:
            raise errors.FailedPrecondition(grpc.StatusCode.FAILED_PRECONDITION, "the session has ended")
