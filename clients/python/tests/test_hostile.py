"""What a careless or hostile caller gets: a clear error, never a silently
wrong value, and no session left open."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import grpc
import pytest

from sqlgate_client import Client, DeadlineExceeded, FailedPrecondition, InvalidArgument, SqlgateError


@pytest.fixture
def client(server):
    with Client(server.target, timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    "value, complaint",
    [
        (2**63, "64 bits"),
        (-(2**63) - 1, "64 bits"),
        (Decimal("NaN"), "finite"),
        (dt.time(1, 2, tzinfo=dt.timezone.utc), "zone"),
        (object(), "no sqlgate value"),
        ({1, 2}, "no sqlgate value"),
    ],
)
def test_values_without_a_lossless_form_are_refused_before_sending(client, value, complaint):
    with pytest.raises((TypeError, ValueError), match=complaint) as error:
        client.execute("SELECT $1", value)
    assert "parameter 1" in str(error.value)


@pytest.mark.parametrize(
    "statement",
    [("INSERT INTO t VALUES ($1, $2)", 1, "x"), ("SELECT $1", "x"), ("SELECT 1",)],
    ids=["parameters-not-grouped", "parameters-a-string", "sql-alone-in-a-tuple"],
)
def test_a_batch_item_of_the_wrong_shape_says_which_shape_it_wants(client, statement):
    with pytest.raises(TypeError, match=r"statement 2: expected sql or \(sql, params\)"):
        client.batch(["SELECT 1", statement])


def test_a_bad_parameter_names_its_field(client):
    with pytest.raises(InvalidArgument) as error:
        client.execute("SELECT $1::int8, $2::int8", 1)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_floats_that_are_not_numbers_survive(client):
    (value,) = client.execute("SELECT $1::float8", math.inf).rows[0]
    assert value == math.inf


def test_a_large_decimal_keeps_every_digit(client):
    huge = Decimal("123456789012345678901234567890.123456789")
    assert client.execute("SELECT $1::numeric", huge).scalar() == huge
    # Exponent notation is sent as plain digits.
    assert client.execute("SELECT $1::numeric", Decimal("1E+3")).scalar() == Decimal(1000)


def test_a_server_side_deadline_carries_its_reason(client):
    with client.session(timeout=30) as tx:
        with pytest.raises(DeadlineExceeded) as error:
            tx.execute("SELECT pg_sleep(5)", timeout=0.2)
        assert error.value.reason == "DEADLINE_EXCEEDED"
        tx.rollback()


def test_a_client_deadline_ends_the_session_and_rolls_back(client, server, table_name):
    client.execute(f"CREATE TABLE {table_name} (id int8)")
    with pytest.raises(DeadlineExceeded):
        with client.session(timeout=1) as tx:
            tx.execute(f"INSERT INTO {table_name} VALUES (1)")
            tx.execute("SELECT pg_sleep(3)")
    assert server.database.query(f"SELECT count(*) FROM {table_name}") == "0"


def test_a_used_up_session_refuses_more_work(client):
    with client.session() as tx:
        tx.execute("SELECT 1")
        tx.commit()
        with pytest.raises(FailedPrecondition):
            tx.execute("SELECT 1")


def test_transaction_control_is_refused_in_a_session(client):
    with pytest.raises(SqlgateError) as error:
        with client.session() as tx:
            tx.execute("COMMIT")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_isolation_is_refused(client):
    with pytest.raises(ValueError, match="unknown isolation"):
        client.session(isolation="chaos")


def test_a_session_ended_from_outside_says_why(client, server, table_name):
    import grpc as _grpc

    from sqlgate_client import Aborted
    from sqlgate_client._proto.sqlgate.v1 import admin_pb2, admin_pb2_grpc

    client.execute(f"CREATE TABLE {table_name} (id int8)")
    with pytest.raises(Aborted) as error:
        with client.session() as tx:
            tx.execute(f"INSERT INTO {table_name} VALUES (1)")
            with _grpc.insecure_channel(server.target) as channel:
                admin_pb2_grpc.AdminStub(channel).TerminateSession(
                    admin_pb2.TerminateSessionRequest(session_id=tx.session_id), timeout=10
                )
            tx.execute("SELECT 1")
    assert error.value.metadata.get("end_reason") == "terminated"
    assert server.database.query(f"SELECT count(*) FROM {table_name}") == "0"
