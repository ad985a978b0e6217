"""The Delta log is the source of truth: a commit the catalog missed is recovered, on start or on the next append."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.catalog import Catalog
from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, HOPPER, STORAGE_BACKENDS, MakeClient, append

pytestmark = STORAGE_BACKENDS


def fail_next_catalog_write(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog write after the next Delta commit fails, as if the process died between the two."""
    catalog: Catalog = client.app.state.services.catalog
    original = catalog.record_version

    def failing(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(catalog, "record_version", original)
        raise ConnectionError("catalog went away")

    monkeypatch.setattr(catalog, "record_version", failing)


def test_a_commit_missing_from_the_catalog_is_recovered_on_start(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    first = make_client()
    first.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    assert append(first, rows(episodes=2, length=5)).status_code == 201
    fail_next_catalog_write(first, monkeypatch)
    lost = append(first, rows(episodes=1, length=4, first_episode=2, seed=3), key="second")
    assert lost.status_code == 500 and lost.json()["error"]["code"] == "internal"
    assert first.get("/v1/datasets/hopper", headers=ADMIN).json()["latest_version"] == 1
    first.__exit__(None, None, None)

    restarted = make_client()
    dataset = restarted.get("/v1/datasets/hopper", headers=ADMIN).json()
    assert dataset["latest_version"] == 2 and dataset["rows"] == 14 and dataset["episodes"] == 3
    stats = restarted.get("/v1/datasets/hopper/versions/2", headers=ADMIN).json()
    assert stats["added_rows"] == 4 and stats["episode_return"]["count"] == 3
    files = restarted.get("/v1/datasets/hopper/versions/2/files", headers=ADMIN).json()
    assert [entry["rows"] for entry in files["data"]] == [10, 4]
    # The recovered commit kept its idempotency key and its episodes' ends.
    retry = append(restarted, rows(episodes=1, length=4, first_episode=2, seed=3), key="second")
    assert retry.status_code == 200 and retry.json() == {"version": 2, "rows": 4, "replayed": True, "duplicate_episodes": 0}
    after_end = append(restarted, rows(episodes=1, length=2, first_episode=2, first_step=10))
    assert after_end.status_code == 422 and after_end.json()["error"]["field"] == "episode_id"
    assert append(restarted, rows(episodes=1, length=2, first_episode=3)).json()["version"] == 3


def test_the_next_append_catches_up_without_a_restart(hopper: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_next_catalog_write(hopper, monkeypatch)
    assert append(hopper, rows(episodes=1, length=3)).status_code == 500
    following = append(hopper, rows(episodes=1, length=3, first_episode=1))
    assert following.status_code == 201 and following.json()["version"] == 2
    versions = hopper.get("/v1/datasets/hopper/versions", headers=ADMIN).json()["data"]
    assert [(v["version"], v["rows"]) for v in versions] == [(2, 6), (1, 3), (0, 0)]


def test_a_lost_catalog_is_rebuilt_from_the_delta_tables(make_client: MakeClient, tmp_path) -> None:
    first = make_client()
    first.post("/v1/datasets", json={**HOPPER, "metadata": {"origin": "lab"}}, headers=ADMIN)
    append(first, rows(episodes=2, length=5, seed=1), key="one")
    append(first, rows(episodes=1, length=3, first_episode=2, seed=2, end="none"))
    before = first.get("/v1/datasets/hopper/versions/latest", headers=ADMIN).json()
    first.__exit__(None, None, None)
    for path in (tmp_path / "data").glob("catalog.sqlite*"):
        path.unlink()

    rebuilt = make_client(database_url=None)
    dataset = rebuilt.get("/v1/datasets/hopper", headers=ADMIN).json()
    assert dataset["metadata"] == {"origin": "lab"} and dataset["latest_version"] == 2
    after = rebuilt.get("/v1/datasets/hopper/versions/latest", headers=ADMIN).json()
    for field in ("rows", "episodes", "sources", "observation", "reward", "episode_return", "episode_length"):
        assert after[field] == before[field], field
    assert append(rebuilt, rows(episodes=2, length=5, seed=1), key="one").json() == {"version": 1, "rows": 10, "replayed": True, "duplicate_episodes": 0}
    continued = append(rebuilt, rows(episodes=1, length=2, first_episode=2, first_step=3))
    assert continued.status_code == 201 and continued.json()["version"] == 3
    # the rebuilt episodes kept their fingerprints: the first upload again under other ids is noticed
    assert append(rebuilt, rows(episodes=2, length=5, first_episode=50, seed=1)).json()["duplicate_episodes"] == 2


def test_a_delete_interrupted_after_its_catalog_write_is_finished_on_start(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    first = make_client()
    first.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    append(first, rows(episodes=1, length=3))
    services = first.app.state.services
    dataset_id = services.datasets.get("hopper").id
    store = services.artifacts.store
    model = f"artifacts/dynamics/{dataset_id}/1/combo-0.bin"
    store.put_bytes(model, b"model")

    def crash(dataset_id: str) -> None:
        raise OSError("the process died here")

    monkeypatch.setattr(services.artifacts, "remove_dataset", crash)
    assert first.delete("/v1/datasets/hopper", headers=ADMIN).status_code == 500
    assert store.exists(model)
    first.__exit__(None, None, None)

    restarted = make_client()
    assert restarted.get("/v1/datasets/hopper", headers=ADMIN).status_code == 404
    assert [key for key in store.files("") if dataset_id in key] == []
    assert [path for path in (tmp_path / "data").rglob("*") if dataset_id in path.parts] == []
