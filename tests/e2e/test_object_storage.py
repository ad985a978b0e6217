"""A real `replaybank serve` with REPLAYBANK_STORAGE_URL on SeaweedFS and real `replaybank worker`s: every
byte of data and every artifact lands in object storage, the local folder keeps only the catalog and scratch,
a killed worker's job resumes on another from a checkpoint pulled through a presigned redirect, and a
deleted dataset or policy leaves no object behind."""

from __future__ import annotations

import hashlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, running_server
from tests.e2e.test_jobs import SPEC, pendulum_rows, start_worker, wait_for  # noqa: F401 (start_worker is a fixture)
from tests.seaweedfs import SeaweedFS
from workers.client import ReplaybankClient

pytestmark = pytest.mark.slow


@pytest.fixture
def prefix() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def service(seaweedfs: SeaweedFS, prefix: str, tmp_path: Path) -> Iterator[Server]:
    settings = {
        "REPLAYBANK_STORAGE_URL": f"s3://{seaweedfs.bucket}/{prefix}",
        "REPLAYBANK_LEASE_SECONDS": "2",
        "REPLAYBANK_QUERY_THREADS": "1",
        **seaweedfs.env(),
    }
    with running_server(tmp_path, settings) as running:
        yield running


@pytest.fixture
def client(service: Server, tmp_path: Path) -> Iterator[ReplaybankClient]:
    with ReplaybankClient(service.url, service.admin_token, cache=tmp_path / "user-cache") as client:
        client.create_dataset("pendulum", SPEC)
        yield client


def test_data_jobs_checkpoints_and_policies_live_in_object_storage_and_leave_nothing_when_deleted(
    service: Server, client: ReplaybankClient, seaweedfs: SeaweedFS, prefix: str, start_worker, tmp_path: Path  # noqa: F811
) -> None:
    def objects(under: str = "") -> list[str]:
        return [key.removeprefix(prefix + "/") for key in seaweedfs.objects(seaweedfs.bucket, f"{prefix}/{under}".rstrip("/"))]

    first, second = pendulum_rows(episodes=4), pendulum_rows(episodes=2, first_episode=10, shift=5.0, seed=1)
    assert client.upload("pendulum", first).version == 1
    assert client.upload("pendulum", second).version == 2
    assert [version.version for version in client.versions("pendulum")] == [2, 1, 0]
    dataset_id = next(key.split("/")[1] for key in objects("datasets") if key.endswith("_delta_log/00000000000000000000.json"))
    data_files = [key for key in objects(f"datasets/{dataset_id}") if key.endswith(".parquet")]
    assert len(data_files) == 2
    # Nothing of the data on the local disk: the folder holds the catalog, its lock and scratch space only.
    assert list(service.data_dir.rglob("*.parquet")) == [] and not (service.data_dir / "datasets").exists()

    counted = client.query("pendulum", "SELECT count(*) AS n, min(episode_id) AS first FROM transitions", version=1)
    assert counted.rows == [[first.num_rows, 0]]
    pulled = client.pull_files("pendulum", 2)
    assert pulled.transferred_bytes == pulled.total_bytes > 0
    for path, entry in zip(pulled.paths, client.files("pendulum", 2).data):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert client.pull_files("pendulum", 2).transferred_bytes == 0  # the cache answers the second pull
    assert client.pull("pendulum", 1).num_rows == first.num_rows

    job = client.submit_job(
        {"kind": "train", "algorithm": "iql", "dataset": "pendulum", "version": 1, "steps": 1000, "seed": 0,
         "params": {"hidden_sizes": [32, 32], "batch_size": 64}}
    )  # fmt: skip
    first = start_worker(name="first")
    wait_for(client, job.id, lambda job: (job.checkpoint_step or 0) > 0, timeout=120, logs=tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    # Once the lease lapses no upload of the dead worker's can still be landing.
    checkpointed = wait_for(client, job.id, lambda job: job.status == "queued", timeout=60, logs=tmp_path).checkpoint_step
    # The checkpoint comes from the store too; its step travels on the service's 307, which the client reads.
    redirect = httpx.get(f"{service.url}/v1/jobs/{job.id}/checkpoint", headers=service.headers())
    assert redirect.status_code == 307 and redirect.headers["location"].startswith(seaweedfs.endpoint)
    assert redirect.headers["Replaybank-Step"] == str(checkpointed)
    [checkpoint_key] = objects(f"artifacts/checkpoints/{job.id}")
    with seaweedfs.filesystem().open_input_stream(f"{seaweedfs.bucket}/{prefix}/{checkpoint_key}") as stored:
        assert client.get_checkpoint(job.id) == (checkpointed, stored.read())
    worker = start_worker("--max-jobs", "1", name="second")
    done = wait_for(client, job.id, lambda job: job.status == "succeeded", timeout=240, logs=tmp_path)
    assert worker.wait(timeout=60) == 0
    assert done.attempts == 2 and done.result["resumed_from_step"] >= checkpointed
    assert done.policy_id is not None
    policy_objects = objects(f"artifacts/policies/{done.policy_id}")
    assert {key.rsplit("/", 1)[1] for key in policy_objects} >= {"policy.onnx", "policy.pt2", "card.json"}
    assert objects(f"artifacts/checkpoints/{job.id}") == []  # the finished job's checkpoint is gone
    # Bulk bytes bypass the service: it answers with a presigned URL, which the client follows without its token.
    for url in (f"/v1/policies/{done.policy_id}/artifact", f"/v1/datasets/pendulum/versions/2/files/{client.files('pendulum', 2).data[0].path}"):
        redirect = httpx.get(service.url + url, headers=service.headers())
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(seaweedfs.endpoint), url
    downloaded = client.download_policy(done.policy_id, tmp_path / "policy")
    with seaweedfs.filesystem().open_input_stream(f"{seaweedfs.bucket}/{prefix}/artifacts/policies/{done.policy_id}/policy.onnx") as stored:
        assert downloaded["onnx"].read_bytes() == stored.read()

    client.delete_policy(done.policy_id)
    assert objects(f"artifacts/policies/{done.policy_id}") == []
    client.delete_dataset("pendulum")
    assert [key for key in objects() if dataset_id in key] == [] and objects("trash") == []
    assert objects("datasets") == []
