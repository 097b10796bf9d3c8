"""The asyncio client: ``AsyncClient`` and its ``AsyncSession``, the same
methods as the blocking ones, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from . import _requests, errors
from ._proto.sqlgate.v1 import query_pb2_grpc, session_pb2, session_pb2_grpc
from .results import Result, row_values


class AsyncClient:
    """A connection to sqlgate for asyncio code (see ``Client``)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        if channel is None:
            channel = (
                grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
            )
        self._channel = channel
        self._timeout = timeout
        self._metadata = tuple(metadata)
        self._query = query_pb2_grpc.QueryStub(channel)
        self._sessions = session_pb2_grpc.SessionsStub(channel)

    async def execute(self, sql: str, *params: Any, timeout: float | None = None, max_rows: int = 0) -> Result:
        """Runs one statement (in its own transaction when it writes)."""
        request = _requests.execute_request(sql, params, max_rows)
        try:
            response = await self._query.Execute(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        return Result.from_proto(response)

    async def stream(self, sql: str, *params: Any, timeout: float | None = None) -> AsyncIterator[tuple[Any, ...]]:
        """Runs one statement and yields its rows as they come; leaving the
        loop early cancels the statement on the database."""
        request = _requests.execute_request(sql, params, 0)
        call = self._query.ExecuteStream(request, timeout=self._deadline(timeout), metadata=self._metadata)
        try:
            async for frame in call:
                if frame.WhichOneof("frame") == "rows":
                    for row in frame.rows.rows:
                        yield row_values(row)
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def batch(self, statements: Iterable[_requests.Statement], *, timeout: float | None = None) -> list[Result]:
        """Runs statements (``sql`` or ``(sql, params)``) in one transaction."""
        request = _requests.batch_request(statements)
        try:
            response = await self._query.ExecuteBatch(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error) from None
        return [Result.from_proto(r) for r in response.results]

    async def executemany(
        self, sql: str, seq_of_params: Iterable[Sequence[Any]], *, timeout: float | None = None
    ) -> list[Result]:
        """Runs one statement with many parameter sets, in one transaction."""
        return await self.batch(((sql, params) for params in seq_of_params), timeout=timeout)

    def session(
        self,
        *,
        isolation: str | None = None,
        read_only: bool = False,
        labels: Mapping[str, str] | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
    ) -> AsyncSession:
        """``async with client.session() as tx:`` commits when the block
        succeeds and rolls back when it raises."""
        begin = _requests.begin_request(isolation, read_only, labels, idle_timeout)
        return AsyncSession(self._sessions, begin, self._deadline(timeout), self._metadata)

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout


class AsyncSession:
    """One transaction bound to one ``Attach`` stream; begins on
    ``async with`` (or ``await session.begin()``)."""

    def __init__(
        self,
        stub: session_pb2_grpc.SessionsStub,
        begin: session_pb2.SessionRequest,
        timeout: float | None,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self._stub = stub
        self._begin = begin
        self._timeout = timeout
        self._metadata = metadata
        self._call: Any = None
        self._answers = _requests.Answers()
        self._next_id = 0
        # The answers of one request are read before the next is sent, so
        # requests awaited together (asyncio.gather) run one after another.
        self._turn = asyncio.Lock()
        #: The id sqlgate gave the session, once begun.
        self.session_id = ""

    async def begin(self) -> AsyncSession:
        """Opens the stream and the transaction."""
        self._call = self._stub.Attach(timeout=self._timeout, metadata=self._metadata)
        try:
            await self._write(self._begin)
            self.session_id = self._answers.began(await self._read())
        except BaseException:
            await self.close()
            raise
        return self

    async def execute(self, sql: str, *params: Any, timeout: float | None = None) -> Result:
        """Runs one statement inside the session; ``timeout`` bounds it."""
        async with self._turn:
            return await self._execute(sql, params, timeout)

    async def _execute(self, sql: str, params: tuple[Any, ...], timeout: float | None) -> Result:
        self._check_open()
        self._next_id += 1
        request_id = self._next_id
        await self._write(_requests.session_execute(request_id, sql, params, timeout))
        result = Result()
        try:
            while not self._answers.result(request_id, await self._read(), result):
                pass
        except _requests.SessionEnded as ended:
            raise await self._final_status() or ended from None
        return result

    async def commit(self) -> None:
        """Commits and ends the session."""
        async with self._turn:
            await self._end(_requests.COMMIT, "committed")

    async def rollback(self) -> None:
        """Rolls back and ends the session."""
        async with self._turn:
            if self._answers.ended:
                return await self.close()
            await self._end(_requests.ROLLBACK, "rolled_back")

    async def _end(self, request: session_pb2.SessionRequest, expected: str) -> None:
        self._check_open()
        await self._write(request)
        try:
            self._answers.ending(await self._read(), expected)
        finally:
            await self.close()

    async def close(self) -> None:
        """Ends the stream; an open transaction is rolled back by sqlgate."""
        if self._call is not None and not self._answers.ended:
            self._call.cancel()
        self._answers.ended = True

    async def __aenter__(self) -> AsyncSession:
        return await self.begin()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None and not self._answers.ended:
            await self.commit()
            return
        try:
            await self.rollback()
        except errors.SqlgateError:
            pass  # the block's own exception says more; the stream is closed anyway
        finally:
            await self.close()

    async def _write(self, request: session_pb2.SessionRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.RpcError as error:
            self._answers.ended = True
            raise errors.from_rpc_error(error) from None
        except grpc.aio.UsageError:
            # The server already ended the stream; its status says why.
            raise await self._final_status() or errors.SqlgateError(
                grpc.StatusCode.UNKNOWN, "the session stream has ended"
            ) from None

    async def _read(self) -> session_pb2.SessionResponse | None:
        try:
            answer = await self._call.read()
        except grpc.RpcError as error:
            self._answers.ended = True
            raise errors.from_rpc_error(error) from None
        return None if answer is grpc.aio.EOF else answer

    async def _final_status(self) -> errors.SqlgateError | None:
        try:
            await self._call.read()
        except grpc.RpcError as error:
            return errors.from_rpc_error(error)
        finally:
            await self.close()
        return None

    def _check_open(self) -> None:
        if self._answers.ended:
            raise errors.FailedPrecondition(grpc.StatusCode.FAILED_PRECONDITION, "the session has ended")
