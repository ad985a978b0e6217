"""Compaction of many small appends: new versions list fewer files, and no version changes in any way."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.compaction import Compaction
from service.datasets import Datasets
from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, HOPPER, STORAGE_BACKENDS, MakeClient, append, stored_keys

pytestmark = STORAGE_BACKENDS

APPENDS = 20
ROWS_PER_APPEND = 4


def datasets_of(client: TestClient) -> Datasets:
    return client.app.state.services.datasets


def compaction_of(client: TestClient) -> Compaction:
    return client.app.state.services.compaction


def compaction_count(client: TestClient) -> int:
    datasets = datasets_of(client)
    return len(datasets.storage.compactions(datasets.get("hopper").id))


def wait_for_compactions(client: TestClient, count: int) -> None:
    deadline = time.monotonic() + 30
    while compaction_count(client) < count:
        assert time.monotonic() < deadline, "no compaction commit appeared"
        time.sleep(0.05)


def wait_until_compaction_idle(client: TestClient) -> None:
    """Compaction runs on one background thread: a task queued behind it finishes after it."""
    compaction_of(client)._work.submit(lambda: None).result(timeout=30)


def chunk(index: int) -> pa.Table:
    return rows(episodes=1, length=ROWS_PER_APPEND, first_episode=index, seed=index)


def snapshot_bytes(client: TestClient, version: int | str) -> bytes:
    response = client.get(f"/v1/datasets/hopper/versions/{version}/transitions", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.content


def snapshot_table(client: TestClient, version: int | str) -> pa.Table:
    return pa.ipc.open_stream(snapshot_bytes(client, version)).read_all()


def manifest(client: TestClient, version: int | str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/datasets/hopper/versions/{version}/files", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def pulled(client: TestClient, version: int | str) -> pa.Table:
    """A version as a client pulls it: each file of its manifest, checked against its checksum, in order."""
    tables = []
    for entry in manifest(client, version):
        response = client.get(f"/v1/datasets/hopper/versions/{version}/files/{entry['path']}", headers=ADMIN)
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
        tables.append(pq.read_table(io.BytesIO(response.content)))
    return pa.concat_tables(tables)


def queried(client: TestClient, version: int | str) -> list[Any]:
    response = client.post(
        "/v1/datasets/hopper/query",
        json={"sql": "select episode_id, step, reward, observation from transitions order by episode_id, step", "version": str(version)},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def view(client: TestClient, version: int) -> dict[str, Any]:
    """Everything a user can see of one version."""
    return {
        "manifest": manifest(client, version),
        "snapshot": snapshot_bytes(client, version),
        "query": queried(client, version),
        "stats": client.get(f"/v1/datasets/hopper/versions/{version}", headers=ADMIN).json(),
    }


def version_numbers(client: TestClient) -> list[int]:
    response = client.get("/v1/datasets/hopper/versions", params={"limit": 100}, headers=ADMIN)
    return sorted(entry["version"] for entry in response.json()["data"])


def test_many_small_appends_are_compacted_without_changing_any_version(make_client: MakeClient) -> None:
    client = make_client(compaction_min_files=APPENDS)
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    before: dict[int, dict[str, Any]] = {}
    for index in range(APPENDS):
        response = append(client, chunk(index))
        assert response.status_code == 201 and response.json()["version"] == index + 1
        before[index + 1] = view(client, index + 1)
        assert compaction_count(client) == 0 or index + 1 == APPENDS
    wait_for_compactions(client, 1)

    last = append(client, chunk(APPENDS))
    assert last.status_code == 201 and last.json()["version"] == APPENDS + 1
    newest = manifest(client, "latest")
    assert len(newest) == 2 and [entry["rows"] for entry in newest] == [APPENDS * ROWS_PER_APPEND, ROWS_PER_APPEND]
    # Rows keep their order: the new version is the old one followed by the new rows.
    assert snapshot_table(client, APPENDS + 1).slice(0, APPENDS * ROWS_PER_APPEND).equals(snapshot_table(client, APPENDS))
    assert pulled(client, APPENDS + 1).column("episode_id").to_pylist() == snapshot_table(client, APPENDS + 1).column("episode_id").to_pylist()

    assert version_numbers(client) == list(range(APPENDS + 2))
    for number, seen in before.items():
        assert view(client, number) == seen, number
        assert len(seen["manifest"]) == number
        assert pulled(client, number).column("reward").equals(snapshot_table(client, number).column("reward"))

    client.__exit__(None, None, None)
    restarted = make_client(compaction_min_files=APPENDS)
    assert version_numbers(restarted) == list(range(APPENDS + 2))
    assert restarted.get("/v1/datasets/hopper", headers=ADMIN).json()["latest_version"] == APPENDS + 1
    for number, seen in before.items():
        # The files compaction replaced are still there for the versions that list them.
        assert manifest(restarted, number) == seen["manifest"] and snapshot_bytes(restarted, number) == seen["snapshot"], number
    assert manifest(restarted, "latest") == newest
    assert append(restarted, chunk(APPENDS + 1)).json()["version"] == APPENDS + 2


def test_a_rebuilt_catalog_lists_merged_files_in_row_order(make_client: MakeClient, tmp_path) -> None:
    first = make_client(database_url=None, compaction_min_files=4)
    assert first.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    for index in range(4):
        append(first, chunk(index))
    wait_for_compactions(first, 1)
    append(first, chunk(4))
    expected = {number: (manifest(first, number), snapshot_bytes(first, number)) for number in range(6)}
    first.__exit__(None, None, None)
    for path in (tmp_path / "data").glob("catalog.sqlite*"):
        path.unlink()

    rebuilt = make_client(database_url=None, compaction_min_files=4)
    assert version_numbers(rebuilt) == list(range(6))
    for number, (files, snapshot) in expected.items():
        assert manifest(rebuilt, number) == files and snapshot_bytes(rebuilt, number) == snapshot, number


@pytest.mark.parametrize("failing", ["merge", "commit_compaction"])
def test_a_failed_compaction_leaves_the_dataset_usable(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failing: str, tmp_path
) -> None:
    client = make_client(compaction_min_files=4)
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    storage = datasets_of(client).storage

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage, failing, broken)
    with caplog.at_level(logging.ERROR, logger="replaybank.compaction"):
        for index in range(5):
            assert append(client, chunk(index)).json()["version"] == index + 1
            wait_until_compaction_idle(client)
    assert "compaction failed" in caplog.text
    assert compaction_count(client) == 0
    dataset_id = datasets_of(client).get("hopper").id
    data_files = [key for key in stored_keys(client, f"datasets/{dataset_id}") if key.endswith(".parquet")]
    assert len(data_files) == 5, "a failed compaction leaves no file behind"
    assert version_numbers(client) == list(range(6))
    for number in range(1, 6):
        assert len(manifest(client, number)) == number
        assert snapshot_table(client, number).num_rows == pulled(client, number).num_rows == number * ROWS_PER_APPEND
        assert len(queried(client, number)) == number * ROWS_PER_APPEND

    monkeypatch.undo()
    assert append(client, chunk(5)).json()["version"] == 6
    wait_for_compactions(client, 1)
    assert append(client, chunk(6)).json()["version"] == 7
    assert [entry["rows"] for entry in manifest(client, 7)] == [6 * ROWS_PER_APPEND, ROWS_PER_APPEND]
