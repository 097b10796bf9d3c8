"""The asyncio client against the same live sqlgate."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from sqlgate_client import AlreadyExists, AsyncClient, DeadlineExceeded


@pytest.fixture
async def client(server):
    async with AsyncClient(server.target, timeout=30) as client:
        yield client


async def test_values_stream_and_batch(client, table_name):
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    assert (await client.execute("SELECT $1::numeric(8,3), $2::timestamptz", Decimal("1.500"), at)).rows == [
        (Decimal("1.500"), at)
    ]
    await client.execute(f"CREATE TABLE {table_name} (id int8 PRIMARY KEY)")
    results = await client.executemany(f"INSERT INTO {table_name} VALUES ($1)", [(n,) for n in range(1, 101)])
    assert [r.rows_affected for r in results] == [1] * 100
    seen = [row[0] async for row in client.stream(f"SELECT id FROM {table_name} ORDER BY id")]
    assert seen == list(range(1, 101))


async def test_sessions_commit_or_roll_back(client, server, table_name):
    await client.execute(f"CREATE TABLE {table_name} (id int8 PRIMARY KEY)")
    async with client.session(read_only=False) as tx:
        assert tx.session_id
        await tx.execute(f"INSERT INTO {table_name} VALUES ($1)", 1)
    with pytest.raises(AlreadyExists) as error:
        async with client.session() as tx:
            await tx.execute(f"INSERT INTO {table_name} VALUES ($1)", 2)
            await tx.execute(f"INSERT INTO {table_name} VALUES ($1)", 1)
    assert error.value.sqlstate == "23505"
    assert server.database.query(f"SELECT array_agg(id) FROM {table_name}") == "{1}"


async def test_a_deadline_is_typed(client):
    # sqlgate's own deadline carries its reason; a client-side one cannot.
    with pytest.raises(DeadlineExceeded):
        await client.execute("SELECT pg_sleep(5)", timeout=0.3)


async def test_requests_awaited_together_run_in_turn(client):
    import asyncio

    async with client.session() as tx:
        results = await asyncio.gather(*(tx.execute("SELECT $1::int8 * 10", n) for n in range(1, 6)))
    assert [r.scalar() for r in results] == [10, 20, 30, 40, 50]
