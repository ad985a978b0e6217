"""Four workers on two cores, training real-sized networks side by side, keep every lease.

The lease is 10 s, so a job is lost only if its heartbeats stall for seconds: behind a busy training
loop, a long export, a transfer holding the job's connection, or a slow answer. Each worker takes its
share of the cores (one thread each here) without being told.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from schemas.jobs import FINISHED_STATUSES, JobPublic
from tests.e2e.conftest import running_server
from tests.e2e.test_jobs import REPLAYBANK, SPEC, pendulum_rows
from workers.client import ReplaybankClient

pytestmark = pytest.mark.slow

WORKERS = 4
LEASE_SECONDS = 10
LEASES_HELD = 3
"""The workers train at least this many lease periods, and until every one of them has finished a job
(training, export and evaluation); then they are stopped (SIGTERM: checkpoint and give the job back)."""
RUN_SECONDS = 150
"""At most this long: a worker that has finished nothing by then fails the test."""


def test_four_workers_on_two_cores_lose_no_lease(tmp_path: Path) -> None:
    with running_server(tmp_path, {"REPLAYBANK_LEASE_SECONDS": str(LEASE_SECONDS)}) as service:
        with ReplaybankClient(service.url, service.admin_token, cache=tmp_path / "cache") as client:
            client.create_dataset("pendulum", SPEC)
            client.upload("pendulum", pendulum_rows(episodes=20))
            # default networks (256x256, batch 256): each job trains, checkpoints, exports and evaluates
            jobs = [
                client.submit_job({"kind": "train", "algorithm": "iql", "dataset": "pendulum", "steps": 400, "seed": seed})
                for seed in range(6 * WORKERS)
            ]
            token = client.create_token("load", ["worker"]).token
            env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"} | {"REPLAYBANK_TOKEN": token}
            command = [REPLAYBANK, "worker", "--service", service.url, "--device", "cpu", "--wait", "1",
                       "--checkpoint-seconds", "2", "--progress-every", "50", "--eval-episodes", "1"]  # fmt: skip
            logs = [tmp_path / f"worker-{index}.log" for index in range(WORKERS)]
            workers = []
            for index, log_path in enumerate(logs):
                with log_path.open("wb") as log:
                    workers.append(
                        subprocess.Popen([*command, "--name", f"w{index}", "--cache-dir", str(tmp_path / f"cache-{index}")],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
                    )
            try:
                started = time.monotonic()
                while time.monotonic() < started + RUN_SECONDS and any(worker.poll() is None for worker in workers):
                    held = time.monotonic() >= started + LEASES_HELD * LEASE_SECONDS
                    if held and len(finishing_workers(client, jobs)) == WORKERS:
                        break
                    time.sleep(1.0)
            finally:
                for worker in workers:
                    worker.send_signal(signal.SIGTERM)
                codes = [worker.wait(timeout=60) for worker in workers]
            assert codes == [0] * WORKERS, [log.read_text()[-2000:] for log in logs]

            seen = [client.get_job(job.id) for job in jobs]
            finished = [job for job in seen if job.status in FINISHED_STATUSES]
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    assert "lease lost" not in text and "heartbeat for job" not in text, text[-5000:]
    assert [job.id for job in seen if job.attempts > 1] == [], [job.error for job in seen if job.attempts > 1]
    assert [job.status for job in finished] == ["succeeded"] * len(finished)
    assert len({job.worker for job in finished}) == WORKERS, "every worker finished a job (export and evaluation too)"
    assert {job.metrics["threads"] for job in finished} == {1.0}, "two cores shared by four workers: one thread each"
    assert text.count("trains on 1 thread(s)") >= len(finished)


def finishing_workers(client: ReplaybankClient, jobs: list[JobPublic]) -> set[str]:
    """The workers that have finished a job so far."""
    return {job.worker for job in (client.get_job(job.id) for job in jobs) if job.status in FINISHED_STATUSES and job.worker}
