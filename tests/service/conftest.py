"""The app on a temporary data directory, its catalog on SQLite or PostgreSQL, and rows to upload."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

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


def rows(
    episodes: int = 2,
    length: int = 5,
    first_episode: int = 0,
    first_step: int = 0,
    observation_size: int = 11,
    action_size: int | None = 3,
    end: str = "terminal",
    seed: int = 0,
    source: str | None = None,
) -> pa.Table:
    """Whole episodes (the last row ends each, by `end`: terminal, truncated or none) as an upload table."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    step = np.tile(np.arange(first_step, first_step + length), episodes).astype(np.int32)
    last = np.tile(np.arange(length) == length - 1, episodes)

    def vectors(size: int) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * size).astype(np.float32)), size)

    action = (
        pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(-1, 1, n * action_size).astype(np.float32)), action_size)
        if action_size
        else pa.array(rng.integers(0, 4, n), pa.int64())
    )
    columns: dict[str, Any] = {
        "episode_id": pa.array(first_episode + np.repeat(np.arange(episodes), length), pa.int64()),
        "step": pa.array(step),
        "observation": vectors(observation_size),
        "action": action,
        "reward": pa.array(rng.normal(size=n).astype(np.float32)),
        "next_observation": vectors(observation_size),
        "terminal": pa.array(last & (end == "terminal")),
        "truncated": pa.array(last & (end == "truncated")),
    }
    if source is not None:
        columns["source"] = pa.array([source] * n)
    return pa.table(columns)


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


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, database_url: str | None) -> Iterator[MakeClient]:
    """Start an app (lifespan included) with these settings overrides; all are closed at teardown."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            settings = Settings(
                **{
                    "data_dir": tmp_path / "data",
                    "database_url": database_url,
                    "admin_token": ADMIN_TOKEN,
                    "query_threads": 1,
                    **overrides,
                }
            )
            return stack.enter_context(TestClient(create_app(settings), raise_server_exceptions=False))

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
