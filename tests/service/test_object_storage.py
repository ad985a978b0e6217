"""What only object storage has: the settings that name it, its readiness, presigned download URLs (of
version files, checkpoints and dynamics models), and several processes committing to one table on
SeaweedFS through our storage code with no lock between them."""

from __future__ import annotations

import hashlib
import multiprocessing
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.server import where_it_keeps_things
from service.settings import Settings
from service.storage.datasets import DatasetStorage
from service.storage.stores import S3Store
from tests.factories import upload_rows as rows
from tests.seaweedfs import SeaweedFS
from tests.service.conftest import ADMIN, HOPPER, MakeClient, append
from tests.service.test_jobs import claim, held, submit

ON_S3 = pytest.mark.parametrize(("database_url", "storage"), [("sqlite", "s3")], indirect=True)

SCHEMA = pa.schema([("episode_id", pa.int64()), ("step", pa.int32()), ("reward", pa.float32())])
WRITERS, APPENDS, ROWS = 4, 4, 25


@pytest.mark.parametrize("url", ["http://bucket/prefix", "s3://", "s3:///prefix", "s3://bucket/p?x=1"])
def test_a_storage_url_that_names_no_bucket_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="s3://bucket/prefix"):
        Settings(storage_url=url)


def test_the_aws_variables_reach_delta_and_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
                        "AWS_REGION": "eu-west-1", "AWS_ALLOW_HTTP": "true", "REPLAYBANK_STORAGE_URL": "s3://b/p/"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.storage_url == "s3://b/p"
    assert settings.s3_options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
    }
    assert "s3cr3t-value" not in repr(settings)
    banner = where_it_keeps_things(settings).splitlines()
    assert banner[1] == "  storage: s3://b/p at http://127.0.0.1:1" and "s3cr3t-value" not in "".join(banner)


@ON_S3
def test_the_local_folder_keeps_no_data_and_readiness_names_a_missing_bucket(
    make_client: MakeClient, storage: dict[str, Any], tmp_path
) -> None:
    client = make_client()
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    assert append(client, rows(episodes=2, length=5)).status_code == 201
    assert client.get("/readyz").status_code == 200
    kept = {path.name for path in (tmp_path / "data").iterdir()} - {"catalog.sqlite-shm", "catalog.sqlite-wal"}
    assert kept == {"artifacts", "catalog.sqlite", "service.lock"}
    assert [path.name for path in (tmp_path / "data" / "artifacts").iterdir()] == ["tmp"]
    assert list((tmp_path / "data").rglob("*.parquet")) == []

    missing = make_client(data_dir=tmp_path / "other", storage_url=f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x")
    ready = missing.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["field"] == "storage"


def _append_until_it_lands(url: str, options: dict[str, str], dataset_id: str, writer: int, start: Any, results: Any) -> None:
    """One process's appends: stage a file, commit it, and after a lost race commit it again on the new head."""
    storage = DatasetStorage(S3Store(url, options))
    start.wait()
    conflicts = 0
    for index in range(APPENDS):
        first = 1000 * writer + 10 * index
        table = pa.table({"episode_id": pa.array([first] * ROWS, pa.int64()), "step": pa.array(range(ROWS), pa.int32()),
                          "reward": pa.array([float(writer)] * ROWS, pa.float32())})  # fmt: skip
        staged = storage.stage(dataset_id, table)
        while True:
            try:
                storage.commit(dataset_id, [staged], {"writer": writer, "append": index})
                break
            except CommitFailedError:
                conflicts += 1
    results.put((writer, conflicts))


def test_processes_committing_to_one_table_at_once_land_as_one_linear_history(seaweedfs: SeaweedFS, s3_url: str) -> None:
    options = seaweedfs.env()
    storage = DatasetStorage(S3Store(s3_url, options))
    dataset_id = uuid.uuid4().hex
    storage.create(dataset_id, SCHEMA, {"version": 0})
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(WRITERS), context.Queue()
    processes = [
        context.Process(target=_append_until_it_lands, args=(s3_url, options, dataset_id, writer, start, results))
        for writer in range(WRITERS)
    ]
    for process in processes:
        process.start()
    finished = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    history = sorted(DeltaTable(storage.path(dataset_id), storage_options=options).history(), key=lambda entry: entry["version"])
    assert [entry["version"] for entry in history] == list(range(WRITERS * APPENDS + 1))
    landed = sorted((int(entry["replaybank.writer"]), int(entry["replaybank.append"])) for entry in history[1:])
    assert landed == [(writer, index) for writer in range(WRITERS) for index in range(APPENDS)]
    latest = storage.latest_delta_version(dataset_id)
    assert len(storage.files(dataset_id, latest)) == WRITERS * APPENDS
    assert storage.read_files(dataset_id, [file.path for file in storage.files(dataset_id, latest)], SCHEMA).num_rows == WRITERS * APPENDS * ROWS
    assert sorted(writer for writer, _ in finished) == list(range(WRITERS))


@ON_S3
def test_a_stored_file_is_readable_in_parts(hopper: TestClient) -> None:
    """Object storage serves Range requests by seeking, as the local file response does."""
    append(hopper, rows(episodes=3, length=20))
    entry = hopper.get("/v1/datasets/hopper/versions/1/files", headers=ADMIN).json()["data"][0]
    url = f"/v1/datasets/hopper/versions/1/files/{entry['path']}"
    whole = hopper.get(url, headers=ADMIN).content
    assert len(whole) == entry["size"]
    tail = hopper.get(url, headers={**ADMIN, "Range": f"bytes=-{entry['size'] + 10}"})
    assert tail.status_code == 206 and tail.content == whole
    several = hopper.get(url, headers={**ADMIN, "Range": "bytes=0-3,10-20"})
    assert several.status_code == 200 and several.content == whole  # several ranges: the whole file


@ON_S3
def test_downloads_are_redirected_to_presigned_urls_that_need_no_token_and_expire(make_client: MakeClient, storage: dict[str, Any]) -> None:
    client = make_client(presigned_downloads=True, presign_seconds=60)
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    append(client, rows(episodes=3, length=20))
    entry = client.get("/v1/datasets/hopper/versions/1/files", headers=ADMIN).json()["data"][0]
    answer = client.get(f"/v1/datasets/hopper/versions/1/files/{entry['path']}", headers=ADMIN, follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["cache-control"] == "no-store"
    location = answer.headers["location"]
    assert storage["aws_secret_access_key"] not in location and ADMIN["Authorization"].split()[1] not in location
    assert "X-Amz-Expires=60" in location

    whole = httpx.get(location)
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == entry["sha256"]
    assert whole.headers["content-type"] == "application/vnd.apache.parquet"
    part = httpx.get(location, headers={"Range": "bytes=-8"})
    assert part.status_code == 206 and part.content == whole.content[-8:]
    # An If-None-Match the service can answer itself is still answered there.
    cached = client.get(f"/v1/datasets/hopper/versions/1/files/{entry['path']}", headers={**ADMIN, "If-None-Match": f'"{entry["sha256"]}"'})
    assert cached.status_code == 304

    store = client.app.state.services.storage.store
    key = f"datasets/{client.app.state.services.datasets.get('hopper').id}/{entry['path']}"
    expired = store.download_url(key, "application/vnd.apache.parquet", now=datetime.now(timezone.utc) - timedelta(seconds=120))
    assert httpx.get(expired).status_code == 403
    forged = location.replace("X-Amz-Expires=60", "X-Amz-Expires=6000")
    assert httpx.get(forged).status_code == 403


@pytest.mark.parametrize(
    ("database_url", "storage", "presigned", "status"),
    [("sqlite", "s3", True, 307), ("sqlite", "s3", False, 200), ("sqlite", "local", True, 200)],
    indirect=["database_url", "storage"],
)
def test_checkpoints_and_dynamics_models_are_redirected_only_with_presigned_downloads_on_object_storage(
    make_client: MakeClient, storage: dict[str, Any], presigned: bool, status: int
) -> None:
    client = make_client(presigned_downloads=presigned)
    assert client.post("/v1/datasets", json=HOPPER, headers=ADMIN).status_code == 201
    assert append(client, rows(episodes=2, length=5)).status_code == 201
    job = submit(client, algorithm="combo")
    claimed = claim(client)
    assert claimed is not None
    checkpoint, dynamics = f"/v1/jobs/{job['id']}/checkpoint", f"/v1/jobs/{job['id']}/dynamics"
    key = {"key": "combo-0"}
    put = client.put(checkpoint, content=b"state at 7", headers={**held(claimed["lease"]), "Replaybank-Step": "7"})
    assert put.status_code == 200, put.text
    assert client.put(dynamics, params=key, content=b"model", headers=held(claimed["lease"])).status_code == 204

    for url, params, stored in [(checkpoint, {}, b"state at 7"), (dynamics, key, b"model")]:
        answer = client.get(url, params=params, headers=ADMIN, follow_redirects=False)
        assert answer.status_code == status, (url, answer.text)
        if url == checkpoint:
            assert answer.headers["Replaybank-Step"] == "7"  # on a 307 too: the store cannot repeat it
        if status == 200:
            assert answer.content == stored, url
            continue
        location = answer.headers["location"]
        assert location.startswith(storage["aws_endpoint_url"]) and answer.headers["cache-control"] == "no-store", url
        assert ADMIN["Authorization"].split()[1] not in location and storage["aws_secret_access_key"] not in location
        assert httpx.get(location).content == stored, url
