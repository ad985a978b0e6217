"""A version larger than the worker's memory budget trains by streaming: a real `replaybank serve` and a
real `replaybank worker --memory-budget 1MB` on a dataset of a few MB (tiny IQL runs on one thread)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.jobs import FINISHED_STATUSES, JobPublic
from tests.e2e.conftest import Server, running_server
from tests.e2e.test_jobs import SMALL, SPEC, pendulum_rows
from workers.algos.streaming import device_row_bytes
from workers.client import ReplaybankClient

pytestmark = pytest.mark.slow

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
BUDGET = 1_000_000
EPISODES_PER_UPLOAD = 25  # 1000-step episodes: 25 000 rows, 0.9 MB on the device per upload


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path) as running:
        yield running


def wait_until_finished(client: ReplaybankClient, job_id: str, worker: subprocess.Popen, log: Path, timeout: float) -> JobPublic:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.status in FINISHED_STATUSES or worker.poll() is not None:
            break
        time.sleep(0.2)
    assert job.status == "succeeded", f"job {job_id} is {job.status} ({job.error}); worker log:\n{log.read_text()[-4000:]}"
    return job


def test_a_version_over_the_budget_trains_by_streaming_and_a_newer_one_converts_only_its_new_file(service, tmp_path) -> None:
    with ReplaybankClient(service.url, service.admin_token, cache=tmp_path / "user-cache") as client:
        client.create_dataset("pendulum", SPEC)
        for upload in range(3):
            rows = pendulum_rows(EPISODES_PER_UPLOAD, length=1000, first_episode=100 * upload, seed=upload)
            client.upload("pendulum", rows)
        three_files = 3 * EPISODES_PER_UPLOAD * 1000
        assert 2 * EPISODES_PER_UPLOAD * 1000 * device_row_bytes(SPEC) > BUDGET  # 1.8 and 2.7 MB against 1 MB
        body = {"kind": "train", "algorithm": "iql", "dataset": "pendulum", "steps": 100, "seed": 0, "params": SMALL}
        older = client.submit_job(body | {"version": 2})
        newer = client.submit_job(body | {"version": 3})
        secret = client.create_token("e2e-worker", ["worker"]).token

        log = tmp_path / "worker.log"
        cache = tmp_path / "worker-cache"
        command = [
            REPLAYBANK, "worker", "--service", service.url, "--device", "cpu", "--name", "streamer", "--wait", "1",
            "--progress-every", "20", "--eval-episodes", "0", "--threads", "1", "--cache-dir", str(cache),
            "--max-jobs", "2",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "REPLAYBANK_TOKEN": secret, "REPLAYBANK_MEMORY_BUDGET": "1MB"}
        with open(log, "ab") as output:
            worker = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            first = wait_until_finished(client, older.id, worker, log, 240)
            second = wait_until_finished(client, newer.id, worker, log, 240)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)

    for job, rows in ((first, 2 * EPISODES_PER_UPLOAD * 1000), (second, three_files)):
        assert job.result["streamed"] is True, job.result
        assert job.result["memory_budget"] == BUDGET
        assert job.result["estimated_device_bytes"] == rows * device_row_bytes(SPEC)
        assert job.result["step"] == 100 and job.policy_id is not None and "critic_loss" in job.metrics
        assert f"job {job.id} streams pendulum@{job.version}: {rows} rows" in log.read_text()
    # each cached Parquet file converted once: version 3 added one file, and one folder
    assert len(list(cache.glob("sha256/*/*.columns-v1"))) == 3
