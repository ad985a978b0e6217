"""Every kind of bad upload gets a 4xx naming the field, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from tests.factories import upload_rows as rows
from tests.service.conftest import (
    ADMIN,
    ARROW,
    BOTH_STORES,
    GRID,
    PARQUET,
    MakeClient,
    append,
    arrow_body,
    json_body,
    parquet_body,
    stored_keys,
)


def data_files(client: TestClient) -> list[str]:
    return [key for key in stored_keys(client, "datasets") if key.endswith(".parquet")]


def delta_commits(client: TestClient) -> list[str]:
    return [key for key in stored_keys(client, "datasets") if "/_delta_log/" in key and key.endswith(".json")]


@pytest.fixture
def database_url() -> None:
    """Validation happens before the catalog is touched: SQLite is enough here (the API tests cover both)."""
    return None


@pytest.fixture
def loaded(hopper: TestClient) -> TestClient:
    """hopper with one accepted version, whose two episodes end (by terminal, then by truncation) ."""
    assert append(hopper, rows(episodes=1, length=5, end="terminal")).status_code == 201
    assert append(hopper, rows(episodes=1, length=5, first_episode=1, end="truncated")).status_code == 201
    return hopper


def replace(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, array)


def vectors(values: np.ndarray, size: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.astype(np.float32).ravel()), size)


def with_value(table: pa.Table, name: str, row: int, value: float) -> pa.Table:
    size = table.schema.field(name).type.list_size
    values = table.column(name).combine_chunks().values.to_numpy().copy().reshape(-1, size)
    values[row, 0] = value
    return replace(table, name, vectors(values, size))


BAD_TABLES: dict[str, tuple[Callable[[pa.Table], pa.Table], str]] = {
    "missing column": (lambda t: t.drop_columns(["reward"]), "reward"),
    "extra column": (lambda t: t.append_column("colour", pa.array(["red"] * t.num_rows)), "colour"),
    "reward as text": (lambda t: replace(t, "reward", pa.array(["1.0"] * t.num_rows)), "reward"),
    "terminal as integers": (lambda t: replace(t, "terminal", pa.array(np.zeros(t.num_rows, np.int8))), "terminal"),
    "short observation": (lambda t: replace(t, "observation", vectors(np.zeros((t.num_rows, 10)), 10)), "observation"),
    "ragged next observation": (
        lambda t: replace(t, "next_observation", pa.array([[0.0] * (11 if i else 12) for i in range(t.num_rows)], pa.list_(pa.float32()))),
        "next_observation",
    ),
    "NaN observation": (lambda t: with_value(t, "observation", 3, float("nan")), "observation"),
    "infinite reward": (lambda t: replace(t, "reward", pa.array([np.inf] + [0.0] * (t.num_rows - 1), pa.float32())), "reward"),
    "action above high": (lambda t: with_value(t, "action", 2, 1.5), "action"),
    "action below low": (lambda t: with_value(t, "action", 0, -1.01), "action"),
    "missing value": (lambda t: replace(t, "reward", pa.array([None] + [0.0] * (t.num_rows - 1), pa.float32())), "reward"),
    "negative step": (lambda t: replace(t, "step", pa.array(np.arange(t.num_rows) - 1, pa.int32())), "step"),
    "step overflowing int32": (lambda t: replace(t, "step", pa.array(np.arange(t.num_rows) + 2**31, pa.int64())), "step"),
    "duplicate step": (lambda t: replace(t, "step", pa.array(np.zeros(t.num_rows), pa.int32())), "step"),
    "row after terminal": (
        lambda t: replace(t, "terminal", pa.array(np.arange(t.num_rows) == 1)),
        "terminal",
    ),
    "row after truncation": (
        lambda t: replace(t, "truncated", pa.array(np.arange(t.num_rows) == 0)),
        "truncated",
    ),
    "source as numbers": (lambda t: t.append_column("source", pa.array(np.zeros(t.num_rows))), "source"),
    "empty source": (lambda t: t.append_column("source", pa.array([""] * t.num_rows)), "source"),
    "no rows": (lambda t: t.slice(0, 0), "rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
@pytest.mark.parametrize("encoding", ["arrow", "parquet"])
def test_bad_rows_are_refused_naming_the_field_and_nothing_is_written(loaded: TestClient, case: str, encoding: str) -> None:
    mutate, field = BAD_TABLES[case]
    before_files, before_commits = data_files(loaded), delta_commits(loaded)
    table = mutate(rows(episodes=1, length=4, first_episode=7))
    body, content_type = (arrow_body(table), ARROW) if encoding == "arrow" else (parquet_body(table), PARQUET)
    response = loaded.post("/v1/datasets/hopper/transitions", content=body, headers={**ADMIN, **content_type})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert error["message"]
    assert data_files(loaded) == before_files and delta_commits(loaded) == before_commits
    assert loaded.get("/v1/datasets/hopper", headers=ADMIN).json()["latest_version"] == 2


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        (rows(episodes=1, length=3, first_episode=0, first_step=5), "episode_id", "already ended in version 1"),
        (rows(episodes=1, length=3, first_episode=1, first_step=9), "episode_id", "already ended in version 2"),
    ],
    ids=["after terminal", "after truncation"],
)
def test_rows_for_an_episode_ended_in_an_earlier_version_are_refused(loaded: TestClient, table: pa.Table, field: str, message: str) -> None:
    before = data_files(loaded)
    response = append(loaded, table)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field and message in response.json()["error"]["message"]
    assert data_files(loaded) == before


def test_an_open_episode_continues_across_uploads_but_may_not_repeat_steps(hopper: TestClient) -> None:
    assert append(hopper, rows(episodes=1, length=4, end="none")).status_code == 201
    repeated = append(hopper, rows(episodes=1, length=3, first_step=3))
    assert repeated.status_code == 422 and repeated.json()["error"]["field"] == "step"
    continued = append(hopper, rows(episodes=1, length=3, first_step=4))
    assert continued.status_code == 201, continued.text
    stats = hopper.get("/v1/datasets/hopper/versions/latest", headers=ADMIN).json()
    assert stats["episodes"] == 1 and stats["episode_length"]["count"] == 1 and stats["episode_length"]["mean"] == 7


def test_discrete_actions_outside_the_range_are_refused(client: TestClient) -> None:
    assert client.post("/v1/datasets", json=GRID, headers=ADMIN).status_code == 201
    table = rows(episodes=1, length=3, observation_size=4, action_size=None)
    good = append(client, table, name="grid")
    assert good.status_code == 201, good.text
    bad = replace(rows(episodes=1, length=3, first_episode=1, observation_size=4, action_size=None), "action", pa.array([0, 4, 1], pa.int64()))
    response = append(client, bad, name="grid")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "action" and "[0, 4)" in response.json()["error"]["message"]
    floats = replace(bad, "action", pa.array([0.0, 1.0, 2.0]))
    assert append(client, floats, name="grid").json()["error"]["field"] == "action"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"", ARROW["Content-Type"], 422, "body"),
        (b"not arrow at all", ARROW["Content-Type"], 422, "body"),
        (b"PAR1 but not parquet", PARQUET["Content-Type"], 422, "body"),
        (b'{"rows": [', "application/json", 422, "body"),
        (b'[{"episode_id": 1}]', "application/json", 422, "body"),
        (b" null", "application/json", 422, "body"),
        (b'{"rows": [{"episode_id": 1, "colour": "red"}]}', "application/json", 422, "colour"),
        (b'{"rows": [{"episode_id": "one"}]}', "application/json", 422, "episode_id"),
        (b'{"rows": []}', "application/json", 422, "rows"),
        (b"episode_id,step\n1,2\n", "text/csv", 415, "Content-Type"),
        (b"\x00\x01", None, 415, "Content-Type"),
    ],
    ids=["empty", "garbage arrow", "garbage parquet", "truncated json", "json list", "json null", "json unknown field", "json wrong type", "json no rows", "csv", "no content type"],
)
def test_malformed_bodies_are_refused(loaded: TestClient, body: bytes, content_type: str | None, status: int, field: str) -> None:
    before = data_files(loaded)
    headers = {**ADMIN, **({"Content-Type": content_type} if content_type else {})}
    response = loaded.post("/v1/datasets/hopper/transitions", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert data_files(loaded) == before


def test_json_rows_missing_a_field_name_it(loaded: TestClient) -> None:
    document = json_body(rows(episodes=1, length=2, first_episode=5))
    del document["rows"][1]["next_observation"]
    response = loaded.post("/v1/datasets/hopper/transitions", json=document, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "next_observation"
    assert "row 1" in response.json()["error"]["message"]


def test_json_upload_round_trips_with_sources(hopper: TestClient) -> None:
    table = rows(episodes=2, length=3, source="policy:abc")
    response = hopper.post("/v1/datasets/hopper/transitions", json=json_body(table), headers=ADMIN)
    assert response.status_code == 201, response.text
    assert response.json() == {"version": 1, "rows": 6, "replayed": False, "duplicate_episodes": 0}
    stats = hopper.get("/v1/datasets/hopper/versions/1", headers=ADMIN).json()
    assert stats["sources"] == {"policy:abc": 6}


@BOTH_STORES
def test_oversized_bodies_get_413_whether_declared_or_streamed(make_client: MakeClient) -> None:
    client = make_client(max_upload_bytes=4096)
    assert client.post("/v1/datasets", json={**GRID}, headers=ADMIN).status_code == 201
    big = arrow_body(rows(episodes=10, length=20, observation_size=4, action_size=None))
    assert len(big) > 4096
    declared = client.post("/v1/datasets/grid/transitions", content=big, headers={**ADMIN, **ARROW})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

    def chunks():
        # No Content-Length: the limit applies to what arrives (the e2e test checks it stops a body early).
        for start in range(0, len(big), 1024):
            yield big[start : start + 1024]

    streamed = client.post("/v1/datasets/grid/transitions", content=chunks(), headers={**ADMIN, **ARROW})
    assert streamed.status_code == 413 and streamed.json()["error"]["field"] == "body"
    assert client.get("/v1/datasets/grid", headers=ADMIN).json()["latest_version"] == 0
    assert data_files(client) == []


def many_batches(table: pa.Table, rows_per_batch: int) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=rows_per_batch):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


@BOTH_STORES
def test_a_streamed_upload_names_the_row_counted_from_the_start(loaded: TestClient) -> None:
    table = with_value(rows(episodes=3, length=10, first_episode=20), "observation", 23, float("inf"))
    before = data_files(loaded)
    response = loaded.post("/v1/datasets/hopper/transitions", content=many_batches(table, 4), headers={**ADMIN, **ARROW})
    assert response.status_code == 422 and response.json()["error"]["field"] == "observation"
    assert response.json()["error"]["message"].startswith("row 23 ")
    # Episode rules span batches: step 9 of episode 20 is repeated in another batch.
    repeated = replace(rows(episodes=1, length=10, first_episode=30), "step", pa.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 1], pa.int32()))
    response = loaded.post("/v1/datasets/hopper/transitions", content=many_batches(repeated, 3), headers={**ADMIN, **ARROW})
    assert response.status_code == 422 and response.json()["error"]["field"] == "step"
    trailing = many_batches(rows(episodes=1, length=3, first_episode=40), 2) + b"junk"
    response = loaded.post("/v1/datasets/hopper/transitions", content=trailing, headers={**ADMIN, **ARROW})
    assert response.status_code == 422 and response.json()["error"]["field"] == "body"
    assert data_files(loaded) == before


@BOTH_STORES
def test_a_streamed_upload_in_many_batches_is_one_version(loaded: TestClient) -> None:
    table = rows(episodes=5, length=100, first_episode=50)
    response = loaded.post("/v1/datasets/hopper/transitions", content=many_batches(table, 33), headers={**ADMIN, **ARROW})
    assert response.status_code == 201 and response.json() == {"version": 3, "rows": 500, "replayed": False, "duplicate_episodes": 0}
    files = loaded.get("/v1/datasets/hopper/versions/3/files", headers=ADMIN).json()["data"]
    assert [entry["rows"] for entry in files] == [5, 5, 500]
    stats = loaded.get("/v1/datasets/hopper/versions/3", headers=ADMIN).json()
    rewards = table.column("reward").to_numpy()
    assert stats["episode_return"]["count"] == 7 and stats["reward"]["count"] == 510
    assert stats["episode_return"]["max"] >= max(rewards[i * 100 : (i + 1) * 100].sum() for i in range(5)) - 1e-4
