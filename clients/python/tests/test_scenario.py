"""The scenario every client runs (Rust: tests/api/client_scenario.rs,
TypeScript: clients/typescript/test/scenario.test.ts): values round-trip
exactly, a 50,000-row stream, a session committed and one rolled back
(checked in the database), and an error's details read."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal

import grpc
import pytest

from sqlgate_client import AlreadyExists, Client, InvalidArgument, Json

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@pytest.fixture
def client(server):
    with Client(server.target, timeout=30) as client:
        yield client


def test_values_round_trip_exactly(client, table_name):
    client.execute(
        f"""CREATE TABLE {table_name} (
            id int8 PRIMARY KEY, small int2, flag bool, ratio float8, price numeric(12,4),
            body text, raw bytea, at timestamptz, local timestamp, day date, clock time,
            doc jsonb, ref uuid, tags int8[], names text[])"""
    )
    at = dt.datetime(2026, 11, 27, 13, 14, 15, 123456, tzinfo=dt.timezone.utc)
    local = dt.datetime(1999, 12, 31, 23, 59, 59, 999999)
    rows = [
        (INT64_MAX, 32767, True, 1.5, Decimal("12.3400"), "héllo ✓", b"\x00\xff", at, local,
         dt.date(2024, 2, 29), dt.time(23, 59, 59, 1), {"a": [1, 2], "b": None}, uuid.UUID(int=1),
         [1, None, INT64_MIN], ["x", None, ""]),
        (INT64_MIN, -32768, False, -0.25, Decimal("-0.0001"), "", b"", at - dt.timedelta(microseconds=1), local,
         dt.date(1, 1, 1), dt.time(0, 0), Json([1, "two"]), uuid.uuid4(), [None, 5], [None]),
        (0, None, None, None, None, None, None, None, None, None, None, None, None, None, None),
    ]
    client.executemany(f"INSERT INTO {table_name} VALUES ({', '.join(f'${i}' for i in range(1, 16))})", rows)

    back = client.execute(f"SELECT * FROM {table_name} ORDER BY id DESC")

    expected = [tuple(v.value if isinstance(v, Json) else v for v in row) for row in rows]
    expected.sort(key=lambda row: row[0], reverse=True)
    assert back.rows == expected
    # Equal Decimals may differ in scale; the scale must come back too.
    assert [str(row[4]) for row in back.rows] == ["12.3400", "None", "-0.0001"]
    assert back.rows[0][7].tzinfo is not None and back.rows[0][8].tzinfo is None
    assert [c.db_type.lower() for c in back.columns][:2] == ["int8", "int2"]
    assert [c.type for c in back.columns][4] == "DECIMAL"
    # And the extremes survive the trip as parameters and as results.
    assert client.execute("SELECT $1::int8, $2::int8", INT64_MIN, INT64_MAX).rows == [(INT64_MIN, INT64_MAX)]


def test_a_50000_row_stream(client):
    count, total, last = 0, 0, None
    for number, label in client.stream("SELECT g, 'row ' || g FROM generate_series(1, 50000) AS g"):
        count += 1
        total += number
        last = (number, label)
    assert count == 50_000
    assert total == 50_000 * 50_001 // 2
    assert last == (50_000, "row 50000")


def test_leaving_a_stream_early_cancels_it(client, server):
    # Fast for 2,000 rows, then ~15 minutes more unless it is cancelled.
    slow = "SELECT g, CASE WHEN g > 2000 THEN pg_sleep(0.01) END FROM generate_series(1, 100000) AS g"
    for number, _ in client.stream(f"/* py-early-exit */ {slow}"):
        if number == 10:
            break
    deadline = time.monotonic() + 5
    while _running(server, "py-early-exit") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(server, "py-early-exit") == 0


def _running(server, marker: str) -> int:
    return int(
        server.database.query(
            f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        )
    )


def test_a_session_commits_and_one_rolls_back(client, server, table_name):
    client.execute(f"CREATE TABLE {table_name} (id int8 PRIMARY KEY, body text)")

    with client.session(isolation="serializable", labels={"test": "commit"}) as tx:
        tx.execute(f"INSERT INTO {table_name} VALUES ($1, $2)", 1, "kept")
        assert tx.execute(f"SELECT body FROM {table_name} WHERE id = $1", 1).rows == [("kept",)]
        # Not visible outside before the commit.
        assert server.database.query(f"SELECT count(*) FROM {table_name}") == "0"

    with pytest.raises(RuntimeError, match="changed my mind"):
        with client.session() as tx:
            tx.execute(f"INSERT INTO {table_name} VALUES ($1, $2)", 2, "gone")
            raise RuntimeError("changed my mind")

    session = client.session()
    session.execute(f"INSERT INTO {table_name} VALUES ($1, $2)", 3, "dropped")
    session.close()  # the stream is cancelled: sqlgate rolls back

    assert server.database.query(f"SELECT id, body FROM {table_name} ORDER BY id") == "1|kept"
    # No session is left open on the database.
    assert _idle_in_transaction(server) == 0


def test_error_details_are_read(client, table_name):
    client.execute(f"CREATE TABLE {table_name} (id int8 PRIMARY KEY)")
    client.execute(f"INSERT INTO {table_name} VALUES ($1)", 1)

    with pytest.raises(AlreadyExists) as duplicate:
        client.execute(f"INSERT INTO {table_name} VALUES ($1)", 1)
    assert duplicate.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert duplicate.value.sqlstate == "23505"
    assert duplicate.value.reason == "DATABASE_ERROR"

    with pytest.raises(InvalidArgument) as syntax:
        client.execute("SELEC 1")
    assert syntax.value.sqlstate == "42601"

    # Inside a session the same details arrive, and the session goes on
    # (PostgreSQL then refuses more work in the aborted transaction).
    with client.session() as tx:
        with pytest.raises(AlreadyExists) as in_session:
            tx.execute(f"INSERT INTO {table_name} VALUES ($1)", 1)
        assert in_session.value.sqlstate == "23505"
        tx.rollback()


def _idle_in_transaction(server) -> int:
    return int(
        server.database.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%'"
        )
    )
