"""What may change about a dataset after its creation (description, metadata, env_id), what may not (its
spec), how edits survive a lost catalog, and catalogs made before these columns existed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from tests.factories import upload_rows as rows
from tests.service.conftest import ADMIN, BOTH_STORES, HOPPER, MakeClient, append

CARD = "# Hopper\n\nRandom-policy rollouts, **5-step** episodes."


def edit(client: TestClient, patch: dict, headers: dict[str, str] = ADMIN):
    return client.patch("/v1/datasets/hopper", json=patch, headers=headers)


def test_a_patch_replaces_the_fields_it_names_and_keeps_the_rest(hopper: TestClient) -> None:
    edited = edit(hopper, {"description": CARD, "metadata": {"origin": "lab"}})
    assert edited.status_code == 200, edited.text
    assert edited.json()["description"] == CARD and edited.json()["metadata"] == {"origin": "lab"}
    assert edited.json()["env_id"] == "Hopper-v5" and edited.json()["observation"]["shape"] == [11]

    again = edit(hopper, {"metadata": {"robot": "hopper"}, "env_id": None}).json()

    assert again["metadata"] == {"robot": "hopper"} and again["env_id"] is None and again["description"] == CARD
    shown = hopper.get("/v1/datasets/hopper", headers=ADMIN).json()
    assert (shown["description"], shown["metadata"], shown["env_id"]) == (CARD, {"robot": "hopper"}, None)
    assert hopper.get("/v1/datasets", headers=ADMIN).json()["data"][0]["description"] == CARD
    assert edit(hopper, {"env_id": "Hopper-v5"}).json()["env_id"] == "Hopper-v5"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"observation": {"shape": [3]}}, "observation"),
        ({"action": {"kind": "discrete", "n": 2}, "description": "x"}, "action"),
        ({"name": "other"}, "name"),
        ({"description": "x" * (64 * 1024 + 1)}, "description"),
        ({"metadata": None}, "metadata"),
        ({"env_id": 7}, "env_id"),
        ({"colour": "red"}, "colour"),
    ],
    ids=["observation", "action", "name", "long description", "null metadata", "env_id type", "unknown field"],
)
def test_a_patch_of_what_may_not_change_is_a_422_naming_the_field(hopper: TestClient, patch: dict, field: str) -> None:
    before = hopper.get("/v1/datasets/hopper", headers=ADMIN).json()
    refused = edit(hopper, patch)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == field
    assert hopper.get("/v1/datasets/hopper", headers=ADMIN).json() == before


def test_an_empty_patch_and_an_unknown_dataset_are_refused(hopper: TestClient) -> None:
    empty = edit(hopper, {})
    assert empty.status_code == 422 and "at least one" in empty.json()["error"]["message"]
    missing = hopper.patch("/v1/datasets/nothing", json={"description": "x"}, headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "name"


def test_editing_needs_the_write_scope(hopper: TestClient) -> None:
    scoped = {}
    for scope in ("read", "write"):
        created = hopper.post("/v1/tokens", json={"name": f"t-{scope}", "scopes": [scope]}, headers=ADMIN).json()
        scoped[scope] = {"Authorization": f"Bearer {created['token']}"}
    assert edit(hopper, {"description": "no"}, scoped["read"]).status_code == 403
    assert edit(hopper, {"description": "yes"}, scoped["write"]).json()["description"] == "yes"


@BOTH_STORES
def test_a_lost_catalog_comes_back_with_the_edits(make_client: MakeClient, tmp_path: Path) -> None:
    first = make_client(database_url=None)
    assert first.post("/v1/datasets", json={**HOPPER, "description": "as created"}, headers=ADMIN).status_code == 201
    append(first, rows(episodes=1, length=3))
    assert edit(first, {"description": CARD, "metadata": {"origin": "lab"}, "env_id": None}).status_code == 200
    first.__exit__(None, None, None)
    for path in (tmp_path / "data").glob("catalog.sqlite*"):
        path.unlink()

    rebuilt = make_client(database_url=None)

    dataset = rebuilt.get("/v1/datasets/hopper", headers=ADMIN).json()
    assert (dataset["description"], dataset["metadata"], dataset["env_id"]) == (CARD, {"origin": "lab"}, None)
    assert dataset["latest_version"] == 1 and dataset["observation"]["shape"] == [11]


@BOTH_STORES
def test_a_dataset_never_edited_comes_back_with_its_creation_description(make_client: MakeClient, tmp_path: Path) -> None:
    first = make_client(database_url=None)
    first.post("/v1/datasets", json={**HOPPER, "description": "as created"}, headers=ADMIN)
    first.__exit__(None, None, None)
    for path in (tmp_path / "data").glob("catalog.sqlite*"):
        path.unlink()
    assert make_client(database_url=None).get("/v1/datasets/hopper", headers=ADMIN).json()["description"] == "as created"


def catalog_url(tmp_path: Path, database_url: str | None) -> str:
    return database_url or f"sqlite:///{tmp_path / 'data' / 'catalog.sqlite'}"


def test_a_catalog_made_before_cards_and_fingerprints_gets_their_columns_on_start(
    make_client: MakeClient, tmp_path: Path, database_url: str | None
) -> None:
    first = make_client()
    first.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    append(first, rows(episodes=2, length=5))
    first.__exit__(None, None, None)
    engine = create_engine(catalog_url(tmp_path, database_url))
    with engine.begin() as connection:  # as a catalog of the release before looked
        connection.exec_driver_sql("DROP INDEX ix_dataset_episodes_fingerprint")
        connection.exec_driver_sql("ALTER TABLE dataset_episodes DROP COLUMN fingerprint")
        connection.exec_driver_sql("ALTER TABLE datasets DROP COLUMN description")
    assert "description" not in {column["name"] for column in inspect(engine).get_columns("datasets")}

    restarted = make_client()

    columns = inspect(engine)
    assert "description" in {column["name"] for column in columns.get_columns("datasets")}
    assert "fingerprint" in {column["name"] for column in columns.get_columns("dataset_episodes")}
    assert "ix_dataset_episodes_fingerprint" in {index["name"] for index in columns.get_indexes("dataset_episodes")}
    engine.dispose()
    dataset = restarted.get("/v1/datasets/hopper", headers=ADMIN).json()
    assert dataset["rows"] == 10 and dataset["description"] is None
    assert edit(restarted, {"description": CARD}).json()["description"] == CARD
    again = append(restarted, rows(episodes=2, length=5, first_episode=7, seed=4))
    assert again.status_code == 201 and again.json()["duplicate_episodes"] == 0
    repeated = append(restarted, rows(episodes=2, length=5, first_episode=20, seed=4))
    assert repeated.json()["duplicate_episodes"] == 2
