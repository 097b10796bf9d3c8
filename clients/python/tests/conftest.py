"""Starts a real sqlgate (``target/debug/sqlgate``) on a free port against a
fresh PostgreSQL database of its own, and checks the database with ``psql``,
not through sqlgate.

Settings: ``SQLGATE_BIN`` (default ``$CARGO_TARGET_DIR/debug/sqlgate`` or
the repository's ``target/debug/sqlgate``) and ``SQLGATE_TEST_POSTGRES_URL``
(default ``postgres://postgres@127.0.0.1:5432/postgres``). Without a binary or
a database the tests are skipped loudly, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[3]


def _unavailable(why: str) -> None:
    message = f"SKIPPING the sqlgate client tests: {why}"
    print(message)
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class Database:
    """A PostgreSQL database of the tests' own, read directly with psql."""

    url: str

    def query(self, sql: str) -> str:
        """Runs SQL with psql; returns its unaligned output."""
        done = subprocess.run(
            ["psql", self.url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-c", sql],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()


@dataclass
class Server:
    """A running sqlgate and the database it serves."""

    target: str
    database: Database


def _binary() -> Path:
    if os.environ.get("SQLGATE_BIN"):
        return Path(os.environ["SQLGATE_BIN"])
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target_dir / "debug" / "sqlgate"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = _binary()
    if not binary.exists():
        _unavailable(f"no sqlgate binary at {binary} (cargo build first)")
    if shutil.which("psql") is None:
        _unavailable("psql is not installed")
    admin = Database(os.environ.get("SQLGATE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    name = f"sqlgate_py_{uuid.uuid4().hex[:12]}"
    try:
        admin.query(f"CREATE DATABASE {name}")
    except (RuntimeError, OSError) as error:
        _unavailable(f"PostgreSQL unreachable: {error}")
    parts = urlsplit(admin.url)
    database = Database(urlunsplit(parts._replace(path=f"/{name}")))
    address = f"127.0.0.1:{_free_port()}"
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [str(binary), "serve", "--listen", address, "--database-url", database.url],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(process, address, log)
        yield Server(address, database)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        admin.query(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _wait_listening(process: subprocess.Popen[bytes], address: str, log: IO[bytes]) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"sqlgate exited ({process.returncode}) instead of listening:\n{output}")
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"sqlgate did not listen on {address} within 20 s")


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return f"t_{uuid.uuid4().hex[:10]}"
