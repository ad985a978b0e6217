"""The app on a temporary data directory, its catalog on SQLite or PostgreSQL, and upload bodies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.clock import ManualClock

ADMIN_TOKEN = "service-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}
PARQUET = {"Content-Type": "application/vnd.apache.parquet"}

HOPPER = {
    "name": "hopper",
    "observation": {"shape": [11]},
    "action": {"kind": "continuous", "shape": [3], "low": [-1.0, -1.0, -1.0], "high": [1.0, 1.0, 1.0]},
    "env_id": "Hopper-v5",
}
GRID = {"name": "grid", "observation": {"shape": [2, 2]}, "action": {"kind": "discrete", "n": 4}}


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def parquet_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def json_body(table: pa.Table) -> dict[str, Any]:
    return {"rows": table.to_pylist()}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The catalog: SQLite in the data directory (None), or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["local"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where the service keeps its bytes, as settings: the local data folder, or (parametrise with "s3") a
    prefix of its own on the session's SeaweedFS. `STORAGE_BACKENDS` runs a module on both.

    The in-process test client routes every URL to the app, so here downloads from object storage pass
    through the service; tests/service/test_object_storage.py and the e2e tests follow presigned redirects."""
    if request.param == "local":
        return {}
    server = request.getfixturevalue("seaweedfs")
    aws = {name.lower(): value for name, value in server.env().items()}
    return {"storage_url": request.getfixturevalue("s3_url"), "presigned_downloads": False, **aws}


STORAGE_BACKENDS = pytest.mark.parametrize(
    ("database_url", "storage"), [("sqlite", "local"), ("postgresql", "local"), ("sqlite", "s3")], indirect=True
)
"""The storage suite: each test on the local folder (with either catalog) and on object storage."""
BOTH_STORES = pytest.mark.parametrize("storage", ["local", "s3"], indirect=True)
"""The same, for tests whose catalog is fixed."""


def stored_keys(client: TestClient, under: str = "") -> list[str]:
    """Every file the service keeps under `under` of its store (the data folder, or its object-storage prefix)."""
    return client.app.state.services.storage.store.files(under)

MakeClient = Callable[..., TestClient]


@pytest.fixture
def clock() -> ManualClock:
    """What the test's queues and apps run their leases on: time moves only when the test advances it."""
    return ManualClock()


@pytest.fixture
def make_client(
    tmp_path: Path, database_url: str | None, clock: ManualClock, storage: dict[str, Any]
) -> Iterator[MakeClient]:
    """Start an app (lifespan included) with these settings overrides, its leases on the test's `clock`; all
    are closed at teardown."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            settings = Settings(
                **{
                    "data_dir": tmp_path / "data",
                    "database_url": database_url,
                    "admin_token": ADMIN_TOKEN,
                    "query_threads": 1,
                    **storage,
                    **overrides,
                }
            )
            return stack.enter_context(TestClient(create_app(settings, clock), raise_server_exceptions=False))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def hopper(client: TestClient) -> TestClient:
    """A client whose service holds an empty `hopper` dataset."""
    response = client.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    assert response.status_code == 201, response.text
    return client


def append(client: TestClient, table: pa.Table, name: str = "hopper", key: str | None = None) -> Any:
    headers = {**ADMIN, **ARROW, **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/v1/datasets/{name}/transitions", content=arrow_body(table), headers=headers)
