"""The installed package adds no top-level module beside its own: its stubs
live under ``sqlgate_client._proto`` and ``google.rpc`` stays the copy of
``googleapis-common-protos`` that other gRPC libraries share."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import google.rpc.status_pb2

import sqlgate_client
from sqlgate_client._proto.sqlgate.v1 import session_pb2


def test_no_top_level_sqlgate_package_is_installed():
    assert importlib.util.find_spec("sqlgate") is None


def test_google_rpc_is_the_shared_copy():
    package = Path(sqlgate_client.__file__).parent
    assert package not in Path(google.rpc.status_pb2.__file__).parents
    # The session's error field is that very Status type.
    assert session_pb2.SessionResponse.DESCRIPTOR.fields_by_name["error"].message_type is (
        google.rpc.status_pb2.Status.DESCRIPTOR
    )


def test_the_package_is_typed():
    package = Path(sqlgate_client.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_proto" / "sqlgate" / "v1" / "session_pb2.pyi").exists()
