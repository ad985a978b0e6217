"""Datasets over HTTP on the app, with the catalog on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from schemas.transition import CLIENT_COLUMNS
from tests.factories import upload_rows as rows
from tests.service.conftest import (
    ADMIN,
    ARROW,
    GRID,
    HOPPER,
    PARQUET,
    STORAGE_BACKENDS,
    MakeClient,
    append,
    json_body,
    parquet_body,
    stored_keys,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_create_list_and_get_with_pagination(client: TestClient) -> None:
    for name in ("c-set", "a-set", "b-set"):
        response = client.post("/v1/datasets", json={**HOPPER, "name": name}, headers=ADMIN)
        assert response.status_code == 201, response.text
        assert response.json()["latest_version"] == 0 and response.json()["rows"] == 0
    first = client.get("/v1/datasets", params={"limit": 2}, headers=ADMIN).json()
    assert [d["name"] for d in first["data"]] == ["a-set", "b-set"] and first["count"] == 3 and first["next"]
    second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next"]}, headers=ADMIN).json()
    assert [d["name"] for d in second["data"]] == ["c-set"] and second["next"] is None
    one = client.get("/v1/datasets/b-set", headers=ADMIN).json()
    assert one["action"]["high"] == [1.0, 1.0, 1.0] and one["env_id"] == "Hopper-v5"


@pytest.mark.parametrize("name", ["Hopper", "../etc", "a b", "-lead", "x" * 65, ""])
def test_unsafe_names_are_refused(client: TestClient, name: str) -> None:
    response = client.post("/v1/datasets", json={**HOPPER, "name": name}, headers=ADMIN)
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["field"] == "name" and body["details"][0]["field"] == "name"
    assert client.get("/v1/datasets", headers=ADMIN).json()["count"] == 0


def test_bad_specs_and_duplicates_are_refused(client: TestClient) -> None:
    low_above_high = {**HOPPER, "action": {"kind": "continuous", "shape": [1], "low": [1.0], "high": [0.0]}}
    assert client.post("/v1/datasets", json=low_above_high, headers=ADMIN).json()["error"]["field"] == "action.continuous"
    unknown = {**HOPPER, "colour": "red"}
    assert client.post("/v1/datasets", json=unknown, headers=ADMIN).json()["error"]["field"] == "colour"
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    again = client.post("/v1/datasets", json=HOPPER, headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"


@STORAGE_BACKENDS
def test_statistics_accumulate_over_versions_and_match_the_rows(hopper: TestClient) -> None:
    uploads = [
        rows(episodes=2, length=6, end="terminal", seed=1),
        rows(episodes=1, length=4, first_episode=2, end="none", seed=2, source="policy:p1"),
        rows(episodes=1, length=3, first_episode=2, first_step=4, end="truncated", seed=3, source="policy:p1"),
    ]
    for number, table in enumerate(uploads, start=1):
        response = append(hopper, table)
        assert response.status_code == 201
        assert response.json() == {"version": number, "rows": table.num_rows, "replayed": False, "duplicate_episodes": 0}

    listed = hopper.get("/v1/datasets/hopper/versions", headers=ADMIN).json()
    assert [v["version"] for v in listed["data"]] == [3, 2, 1, 0]
    assert [v["rows"] for v in listed["data"]] == [19, 16, 12, 0]
    assert listed["data"][0]["sources"] == {"logged": 12, "policy:p1": 7}

    everything = pa.concat_tables([t.drop_columns(["source"]) if "source" in t.column_names else t for t in uploads])
    observations = everything.column("observation").combine_chunks().values.to_numpy().reshape(-1, 11)
    actions = everything.column("action").combine_chunks().values.to_numpy().reshape(-1, 3)
    rewards = everything.column("reward").to_numpy()
    stats = hopper.get("/v1/datasets/hopper/versions/latest", headers=ADMIN).json()
    assert stats["version"] == 3 and stats["rows"] == 19 and stats["added_rows"] == 3 and stats["episodes"] == 3
    np.testing.assert_allclose(stats["observation"]["mean"], observations.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation"]["std"], observations.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(axis=0))
    np.testing.assert_allclose(stats["action"]["max"], actions.max(axis=0))
    assert stats["reward"]["count"] == 19
    assert stats["reward"]["mean"] == pytest.approx(float(rewards.mean()), rel=1e-5)
    # Episodes 0 and 1 end in version 1; episode 2 spans versions 2 and 3 (7 rows) and ends by truncation.
    returns = [rewards[0:6].sum(), rewards[6:12].sum(), rewards[12:19].sum()]
    assert stats["episode_return"]["count"] == 3
    assert stats["episode_return"]["mean"] == pytest.approx(float(np.mean(returns)), rel=1e-5)
    assert stats["episode_length"]["min"] == 6 and stats["episode_length"]["max"] == 7

    # Histograms computed at commit, merged version by version, hold every value in the right bin.
    for name, values in (("reward", rewards), ("episode_return", returns), ("episode_length", [6, 6, 7])):
        histogram = stats[name]["histogram"]
        assert sum(histogram["counts"]) == len(values) and len(histogram["counts"]) <= 32
        bins = np.floor((np.asarray(values, np.float64) - histogram["low"]) / histogram["width"]).astype(int)
        assert np.bincount(bins, minlength=len(histogram["counts"])).tolist() == histogram["counts"], name

    middle = hopper.get("/v1/datasets/hopper/versions/2", headers=ADMIN).json()
    assert middle["episode_return"]["count"] == 2 and middle["rows"] == 16
    np.testing.assert_allclose(middle["observation"]["max"], observations[:16].max(axis=0))
    empty = hopper.get("/v1/datasets/hopper/versions/0", headers=ADMIN).json()
    assert empty["rows"] == 0 and empty["observation"] is None and empty["reward"]["mean"] is None
    assert empty["reward"]["histogram"] is None


@STORAGE_BACKENDS
def test_a_retry_with_the_same_key_returns_the_first_answer_and_adds_nothing(hopper: TestClient) -> None:
    table = rows(episodes=1, length=5)
    first = append(hopper, table, key="upload-1")
    retry = append(hopper, table, key="upload-1")
    assert first.status_code == 201 and first.json() == {"version": 1, "rows": 5, "replayed": False, "duplicate_episodes": 0}
    assert retry.status_code == 200 and retry.json() == {"version": 1, "rows": 5, "replayed": True, "duplicate_episodes": 0}
    assert hopper.get("/v1/datasets/hopper", headers=ADMIN).json()["rows"] == 5
    different = append(hopper, rows(episodes=1, length=5, first_episode=9), key="upload-1")
    assert different.status_code == 409 and different.json()["error"]["field"] == "Idempotency-Key"
    assert hopper.get("/v1/datasets/hopper", headers=ADMIN).json()["latest_version"] == 1


def shifted(table: pa.Table, by: int) -> pa.Table:
    """The same rows under other episode ids (as a file uploaded again gets fresh ones)."""
    ids = pa.array(table.column("episode_id").to_numpy() + by)
    return table.set_column(table.schema.get_field_index("episode_id"), "episode_id", ids)


def small_batches(table: pa.Table) -> bytes:
    """An Arrow stream cut into two-row batches: the service sees the body in many parts."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def test_whole_episodes_already_stored_under_other_ids_are_counted(hopper: TestClient) -> None:
    original = rows(episodes=3, length=5, seed=1)
    assert append(hopper, original).json()["duplicate_episodes"] == 0

    again = hopper.post(
        "/v1/datasets/hopper/transitions", content=parquet_body(shifted(original, 100)), headers={**ADMIN, **PARQUET}
    )
    streamed = hopper.post(
        "/v1/datasets/hopper/transitions", content=small_batches(shifted(original, 200)), headers={**ADMIN, **ARROW}
    )
    as_json = hopper.post("/v1/datasets/hopper/transitions", json=json_body(shifted(original, 300)), headers=ADMIN)

    for answer in (again, streamed, as_json):
        assert answer.status_code == 201 and answer.json()["duplicate_episodes"] == 3, answer.text
    assert hopper.get("/v1/datasets/hopper", headers=ADMIN).json()["rows"] == 60  # noticed, not refused
    assert hopper.get("/v1/datasets/hopper/versions/2", headers=ADMIN).json()["duplicate_episodes"] == 3
    listed = hopper.get("/v1/datasets/hopper/versions", headers=ADMIN).json()["data"]
    assert [version["duplicate_episodes"] for version in listed] == [3, 3, 3, 0, 0]
    one_old_one_new = pa.concat_tables([shifted(original.slice(5, 5), 400), rows(episodes=1, length=5, first_episode=500, seed=9)])
    assert append(hopper, one_old_one_new, key="mixed").json()["duplicate_episodes"] == 1
    replayed = append(hopper, one_old_one_new, key="mixed").json()
    assert replayed["replayed"] is True and replayed["duplicate_episodes"] == 1
    changed = original.set_column(original.schema.get_field_index("reward"), "reward", pa.array(np.ones(15, np.float32)))
    assert append(hopper, shifted(changed, 600)).json()["duplicate_episodes"] == 0


def test_an_episode_spread_over_uploads_is_never_counted_as_a_duplicate(hopper: TestClient) -> None:
    whole = rows(episodes=1, length=6, seed=2)
    append(hopper, whole)
    append(hopper, shifted(whole.slice(0, 3), 10))  # episode 10 stays open
    finished = append(hopper, shifted(whole.slice(3, 3), 10))
    assert finished.status_code == 201 and finished.json()["duplicate_episodes"] == 0
    catalog = hopper.app.state.services.catalog
    states = catalog.episodes(catalog.dataset("hopper").id, [0, 10])
    assert states[0].fingerprint is not None and states[10].fingerprint is None


def test_tags_latest_and_numbers_are_interchangeable(hopper: TestClient) -> None:
    append(hopper, rows(episodes=1, length=5))
    append(hopper, rows(episodes=1, length=5, first_episode=1))
    tagged = hopper.put("/v1/datasets/hopper/tags/first", json={"version": 1}, headers=ADMIN)
    assert tagged.status_code == 200 and tagged.json() == {"name": "first", "version": 1, "previous": None}
    assert hopper.put("/v1/datasets/hopper/tags/newest", json={"version": "latest"}, headers=ADMIN).json()["version"] == 2
    assert hopper.put("/v1/datasets/hopper/tags/also-first", json={"version": "first"}, headers=ADMIN).json()["version"] == 1
    for reference, rows_expected in (("first", 5), ("1", 5), ("latest", 10), ("newest", 10)):
        assert hopper.get(f"/v1/datasets/hopper/versions/{reference}", headers=ADMIN).json()["rows"] == rows_expected
        assert hopper.get(f"/v1/datasets/hopper/versions/{reference}/files", headers=ADMIN).json()["count"] == rows_expected // 5
    listed = hopper.get("/v1/datasets/hopper/versions", headers=ADMIN).json()["data"]
    assert listed[1]["tags"] == ["also-first", "first"]
    for bad in ("latest", "12", "Bad_Tag"):
        response = hopper.put(f"/v1/datasets/hopper/tags/{bad}", json={"version": 1}, headers=ADMIN)
        assert response.status_code == 422 and response.json()["error"]["field"] == "tag"
    missing = hopper.put("/v1/datasets/hopper/tags/later", json={"version": 7}, headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "version"
    assert hopper.delete("/v1/datasets/hopper/tags/first", headers=ADMIN).status_code == 204
    assert hopper.get("/v1/datasets/hopper/versions/first", headers=ADMIN).status_code == 404
    assert hopper.delete("/v1/datasets/hopper/tags/first", headers=ADMIN).status_code == 404


def test_moving_a_tag_says_where_it_pointed_before(hopper: TestClient) -> None:
    append(hopper, rows(episodes=1, length=5))
    append(hopper, rows(episodes=1, length=5, first_episode=1))
    assert hopper.put("/v1/datasets/hopper/tags/best", json={"version": 1}, headers=ADMIN).json()["previous"] is None

    moved = hopper.put("/v1/datasets/hopper/tags/best", json={"version": "latest"}, headers=ADMIN)

    assert moved.status_code == 200 and moved.json() == {"name": "best", "version": 2, "previous": 1}
    listed = hopper.get("/v1/datasets/hopper/tags", headers=ADMIN).json()
    assert listed["data"] == [{"name": "best", "version": 2}]


def body_chunks(client: TestClient, path: str, headers: dict[str, str]) -> tuple[int, list[bytes]]:
    """Call the app over ASGI directly: the status and each body message as the server would send it."""
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if requested:
            await anyio.sleep_forever()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("testserver", 80), "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
    }
    anyio.run(client.app, scope, receive, send)
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    return status, [message["body"] for message in sent if message["type"] == "http.response.body" and message.get("body")]


@STORAGE_BACKENDS
def test_files_go_out_in_mebibyte_chunks(hopper: TestClient) -> None:
    # Starlette's 64 KiB default took a trip through the event loop and a thread per 64 KiB of a large pull.
    append(hopper, rows(episodes=32, length=1000))
    entry = hopper.get("/v1/datasets/hopper/versions/1/files", headers=ADMIN).json()["data"][0]
    assert entry["size"] > 3 << 20
    path = f"/v1/datasets/hopper/versions/1/files/{entry['path']}"
    status, chunks = body_chunks(hopper, path, ADMIN)
    assert status == 200 and hashlib.sha256(b"".join(chunks)).hexdigest() == entry["sha256"]
    assert [len(chunk) for chunk in chunks[:-1]] == [1 << 20] * (len(chunks) - 1)
    status, chunks = body_chunks(hopper, path, {**ADMIN, "Range": "bytes=1000-"})
    assert status == 206 and sum(map(len, chunks)) == entry["size"] - 1000 and len(chunks[0]) == 1 << 20


@STORAGE_BACKENDS
def test_files_are_immutable_checksummed_and_served_with_ranges(hopper: TestClient) -> None:
    append(hopper, rows(episodes=2, length=5))
    first = hopper.get("/v1/datasets/hopper/versions/1/files", headers=ADMIN).json()
    append(hopper, rows(episodes=1, length=5, first_episode=2))
    second = hopper.get("/v1/datasets/hopper/versions/2/files", headers=ADMIN).json()
    assert hopper.get("/v1/datasets/hopper/versions/1/files", headers=ADMIN).json() == first
    assert second["data"][: first["count"]] == first["data"] and second["count"] == first["count"] + 1
    assert [f["rows"] for f in second["data"]] == [10, 5]

    entry = second["data"][1]
    url = f"/v1/datasets/hopper/versions/2/files/{entry['path']}"
    whole = hopper.get(url, headers=ADMIN)
    assert whole.status_code == 200 and len(whole.content) == entry["size"]
    assert hashlib.sha256(whole.content).hexdigest() == entry["sha256"]
    assert whole.headers["etag"] == f'"{entry["sha256"]}"' and "immutable" in whole.headers["cache-control"]
    assert pq.read_table(pa.BufferReader(whole.content)).num_rows == 5
    part = hopper.get(url, headers={**ADMIN, "Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole.content[100:]
    assert part.headers["content-range"] == f"bytes 100-{entry['size'] - 1}/{entry['size']}"
    assert hopper.get(url, headers={**ADMIN, "If-None-Match": whole.headers["etag"]}).status_code == 304
    suffix = hopper.get(url, headers={**ADMIN, "Range": "bytes=-8"})
    assert suffix.status_code == 206 and suffix.content == whole.content[-8:]
    middle = hopper.get(url, headers={**ADMIN, "Range": "bytes=4-11"})
    assert middle.status_code == 206 and middle.content == whole.content[4:12]
    outside = hopper.get(url, headers={**ADMIN, "Range": f"bytes={entry['size']}-"})
    assert outside.status_code == 416 and outside.json()["error"]["field"] == "Range"
    assert hopper.get(url, headers={**ADMIN, "Range": "lines=1-2"}).json()["error"]["code"] == "bad_request"
    # A file of version 2 is not part of version 1.
    assert hopper.get(f"/v1/datasets/hopper/versions/1/files/{entry['path']}", headers=ADMIN).status_code == 404
    assert hopper.get("/v1/datasets/hopper/versions/1/files/..%2Fcatalog.sqlite", headers=ADMIN).status_code == 404


def test_a_pull_reads_a_versions_file_list_from_the_delta_log_once(hopper: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull asks for the manifest and then each file, and each file is looked up in the manifest: a
    version never changes, so the service reads its Delta log once, not once per file."""
    for episode in range(3):
        append(hopper, rows(episodes=1, length=5, first_episode=episode, seed=episode))
    hopper.app.state.services.compaction._work.submit(lambda: None).result(timeout=30)  # its check after the last append reads the log too
    storage = hopper.app.state.services.datasets.storage
    reads: list[int] = []
    read_files = storage.files
    monkeypatch.setattr(storage, "files", lambda dataset_id, delta_version: reads.append(delta_version) or read_files(dataset_id, delta_version))
    manifest = hopper.get("/v1/datasets/hopper/versions/3/files", headers=ADMIN).json()["data"]
    for entry in manifest:
        answer = hopper.get(f"/v1/datasets/hopper/versions/3/files/{entry['path']}", headers=ADMIN)
        assert hashlib.sha256(answer.content).hexdigest() == entry["sha256"]
    assert len(manifest) == 3 and len(reads) == 1
    assert hopper.get("/v1/datasets/hopper/versions/2/files", headers=ADMIN).json()["count"] == 2
    assert len(reads) == 2


@pytest.mark.parametrize("accept", ["application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"])
@STORAGE_BACKENDS
def test_a_whole_version_comes_back_in_the_dataset_schema(hopper: TestClient, accept: str) -> None:
    uploads = [rows(episodes=2, length=5, seed=1), rows(episodes=1, length=5, first_episode=2, seed=2)]
    for table in uploads:
        append(hopper, table)
    response = hopper.get("/v1/datasets/hopper/versions/latest/transitions", headers={**ADMIN, "Accept": accept})
    assert response.status_code == 200 and response.headers["content-type"].startswith(accept)
    if "arrow" in accept:
        pulled = pa.ipc.open_stream(response.content).read_all()
    else:
        pulled = pq.read_table(pa.BufferReader(response.content))
    assert pulled.schema.field("observation").type == pa.list_(pa.float32(), 11)
    assert pulled.select(CLIENT_COLUMNS).equals(pa.concat_tables(uploads).select(CLIENT_COLUMNS).cast(pulled.select(CLIENT_COLUMNS).schema))
    assert set(pulled.column("source").to_pylist()) == {"logged"} and pulled.column("batch_id").null_count == 0
    first = hopper.get("/v1/datasets/hopper/versions/1/transitions", headers=ADMIN)
    assert pa.ipc.open_stream(first.content).read_all().num_rows == 10


def test_scopes_and_revoked_tokens(client: TestClient) -> None:
    tokens = {}
    for scope in ("read", "write", "worker"):
        created = client.post("/v1/tokens", json={"name": f"t-{scope}", "scopes": [scope]}, headers=ADMIN)
        assert created.status_code == 201 and created.json()["token"].startswith("rb_")
        tokens[scope] = created.json()["token"]
    assert client.get("/v1/datasets").status_code == 401
    assert client.get("/v1/datasets", headers=bearer("rb_unknown")).json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/datasets", headers=bearer(tokens["read"])).status_code == 200
    assert client.post("/v1/datasets", json=HOPPER, headers=bearer(tokens["read"])).status_code == 403
    assert client.post("/v1/datasets", json=HOPPER, headers=bearer(tokens["write"])).status_code == 201
    assert append(client, rows(), key=None).status_code == 201  # admin
    upload = rows(episodes=1, length=2, first_episode=5)
    for scope, status in (("read", 403), ("worker", 403), ("write", 201)):
        headers = {**bearer(tokens[scope]), "Content-Type": "application/json"}
        response = client.post("/v1/datasets/hopper/transitions", json={"rows": upload.to_pylist()}, headers=headers)
        assert response.status_code == status, (scope, response.text)
    assert client.get("/v1/datasets/hopper/versions", headers=bearer(tokens["worker"])).status_code == 200
    assert client.delete("/v1/datasets/hopper", headers=bearer(tokens["write"])).status_code == 403
    assert client.post("/v1/tokens", json={"name": "x", "scopes": ["read"]}, headers=bearer(tokens["write"])).status_code == 403
    assert client.get("/v1/tokens", headers=ADMIN).json()["count"] == 4
    for scope in ("read", "write", "worker"):
        itself = client.get("/v1/whoami", headers=bearer(tokens[scope])).json()
        assert itself["name"] == f"t-{scope}" and itself["scopes"] == [scope] and "token" not in itself
    assert client.get("/v1/whoami", headers=bearer("rb_unknown")).status_code == 401
    assert client.delete("/v1/tokens/t-read", headers=ADMIN).status_code == 204
    assert client.get("/v1/datasets", headers=bearer(tokens["read"])).status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


@STORAGE_BACKENDS
def test_delete_removes_every_version_and_frees_the_name(hopper: TestClient) -> None:
    append(hopper, rows())
    assert stored_keys(hopper, "datasets")
    assert hopper.delete("/v1/datasets/hopper", headers=ADMIN).status_code == 204
    assert hopper.get("/v1/datasets/hopper", headers=ADMIN).status_code == 404
    assert stored_keys(hopper, "datasets") == [] and stored_keys(hopper, "trash") == []
    assert hopper.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    assert hopper.get("/v1/datasets/hopper/versions", headers=ADMIN).json()["count"] == 1
    assert append(hopper, rows()).json()["version"] == 1


def test_every_error_uses_the_envelope(hopper: TestClient) -> None:
    cases = [
        (hopper.get("/v1/nowhere", headers=ADMIN), 404, "not_found"),
        (hopper.delete("/healthz", headers=ADMIN), 405, "method_not_allowed"),
        (hopper.get("/v1/datasets/nothing", headers=ADMIN), 404, "not_found"),
        (hopper.get("/v1/datasets/hopper/versions/9", headers=ADMIN), 404, "not_found"),
        (hopper.get("/v1/datasets", params={"limit": 0}, headers=ADMIN), 422, "invalid"),
        (hopper.post("/v1/datasets", content=b"{not json", headers={**ADMIN, "Content-Type": "application/json"}), 422, "invalid"),
        (hopper.get("/v1/datasets"), 401, "unauthorized"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert set(response.json()) <= {"error", "details"} and response.json()["error"]["code"] == code


def test_a_malformed_json_body_is_blamed_on_the_body_and_says_where_it_broke(hopper: TestClient) -> None:
    json_headers = {**ADMIN, "Content-Type": "application/json"}
    job = hopper.post("/v1/jobs", content=b'{"kind": "train",', headers=json_headers)
    assert job.status_code == 422, job.text
    error = job.json()["error"]
    assert error["field"] == "body" and "line 1, column 18" in error["message"], error
    dataset = hopper.post("/v1/datasets", content=b'{\n  "name": "x",\n  "observation": }', headers=json_headers)
    assert dataset.json()["error"]["field"] == "body" and "line 3, column 18" in dataset.json()["error"]["message"]
    assert hopper.get("/v1/jobs", headers=ADMIN).json()["count"] == 0
    assert hopper.get("/v1/datasets", headers=ADMIN).json()["count"] == 1


@STORAGE_BACKENDS
def test_discrete_dataset_round_trip(client: TestClient) -> None:
    assert client.post("/v1/datasets", json=GRID, headers=ADMIN).status_code == 201
    table = rows(episodes=3, length=4, observation_size=4, action_size=None)
    assert append(client, table, name="grid").status_code == 201
    stats = client.get("/v1/datasets/grid/versions/1", headers=ADMIN).json()
    assert stats["action"]["max"][0] <= 3 and stats["observation"]["mean"].__len__() == 4
    pulled = pa.ipc.open_stream(client.get("/v1/datasets/grid/versions/1/transitions", headers=ADMIN).content).read_all()
    assert pulled.schema.field("action").type == pa.int64() and pulled.column("action").equals(table.column("action"))


def test_a_second_service_on_the_same_data_directory_is_refused(make_client: MakeClient) -> None:
    make_client()
    with pytest.raises(RuntimeError, match="another replaybank service is using"):
        make_client()
