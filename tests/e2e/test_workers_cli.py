"""`replaybank workers` against a real `replaybank serve`: a real idle worker (its long-polls find no job)
and a hand-driven one holding a job, as the table and as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPLAYBANK, Server
from tests.factories import upload_rows as rows
from tests.service.conftest import HOPPER, arrow_body

SEEN_WITHIN_S = 60


@pytest.fixture
def idle_worker(server: Server, tmp_path: Path) -> Iterator[str]:
    """A real `replaybank worker` named `idle-e2e` with nothing to do: it claims again every second."""
    secret = httpx.post(f"{server.url}/v1/tokens", json={"name": "idle", "scopes": ["worker"]}, headers=server.headers()).json()["token"]
    log = open(tmp_path / "worker.log", "ab")
    process = subprocess.Popen(
        [REPLAYBANK, "worker", "--service", server.url, "--token", secret, "--device", "cpu", "--name", "idle-e2e",
         "--wait", "1", "--threads", "1", "--cache-dir", str(tmp_path / "cache")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    log.close()
    try:
        yield "idle-e2e"
    finally:
        process.kill()
        process.wait(timeout=30)


def replaybank(server: Server, *args: str) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REPLAYBANK_")}
    env.update({"REPLAYBANK_URL": server.url, "REPLAYBANK_TOKEN": server.admin_token})
    result = subprocess.run([REPLAYBANK, *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"replaybank {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def listed_once(server: Server, names: set[str]) -> list[dict[str, Any]]:
    """`replaybank workers --json`, as soon as it lists every one of `names`."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        workers = json.loads(replaybank(server, "workers", "--json"))
        if names <= {worker["name"] for worker in workers}:
            return workers
        assert time.monotonic() < deadline, f"the workers list never showed {names}: {workers}\n{server.log()}"
        time.sleep(0.2)


def test_replaybank_workers_lists_an_idle_real_worker_and_a_busy_one(server: Server, idle_worker: str) -> None:
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30) as client:
        assert client.post("/v1/datasets", json=HOPPER).status_code == 201
        body = arrow_body(rows(episodes=2, length=5))
        assert client.post("/v1/datasets/hopper/transitions", content=body, headers={"Content-Type": "application/vnd.apache.arrow.stream"}).status_code == 201
        listed_once(server, {idle_worker})
        # a job that wants a GPU, which the CPU worker never takes: claimed by hand as a CUDA worker
        job = client.post("/v1/jobs", json={"kind": "train", "algorithm": "bc", "dataset": "hopper", "steps": 10, "device": "cuda"}).json()
        claimed = client.post("/v1/workers/claim", json={"worker": "busy-e2e", "device": "cuda", "wait": 5, "threads": 6})
        assert claimed.status_code == 200, claimed.text
        beat = {"progress": 0.1, "step": 1, "metrics": {"threads": 3.0}}
        lease = {"Replaybank-Lease": claimed.json()["lease"]}
        assert client.post(f"/v1/jobs/{job['id']}/heartbeat", json=beat, headers=lease).status_code == 200

        workers = {worker["name"]: worker for worker in listed_once(server, {idle_worker, "busy-e2e"})}
        table = replaybank(server, "workers")

    idle, busy = workers[idle_worker], workers["busy-e2e"]
    assert (idle["device"], idle["threads"], idle["current_job"], idle["last_heartbeat"]) == ("cpu", 1, None, None)
    assert (busy["device"], busy["threads"], busy["current_job"], busy["heartbeats"]) == ("cuda", 3, job["id"], 1)
    lines = table.splitlines()
    assert lines[0].split() == ["name", "device", "threads", "job", "last", "heartbeat", "last", "seen"]
    assert re.search(rf"^busy-e2e\s+cuda\s+3\s+{job['id']}\s+\d+s ago\s+\d+s ago$", table, re.MULTILINE), table
    assert re.search(rf"^{idle_worker}\s+cpu\s+1\s+\(idle\)\s+never\s+\d+s ago$", table, re.MULTILINE), table
