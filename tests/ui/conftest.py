"""The dashboard under test: a real `replaybank serve` with a real worker, the reuse loop run once through it
(logged data, an offline policy, its collection, a fine-tuned policy, an evaluation, a sweep of two seeds),
and Debian's chromium driven by Playwright. Training is tiny: 200 steps of 32x32 networks on one thread."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from schemas.jobs import FINISHED_STATUSES, JobPublic
from schemas.splits import Split, held_out
from schemas.sweeps import SweepDetail
from tests.conftest import service_unavailable
from tests.e2e.conftest import Server, running_server
from workers.algos.data import arrays_to_arrow
from workers.client import ReplaybankClient
from workers.rollouts.behaviour import pendulum_dataset

CHROMIUM = "/usr/bin/chromium"
REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
ARTIFACTS = Path(os.environ.get("REPLAYBANK_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "ui"
DATASET = "pendulum"
SPEC = DatasetSpec(
    observation=ObservationSpec(shape=[3]),
    action=ContinuousActionSpec(shape=[1], low=[-2.0], high=[2.0]),
    env_id="Pendulum-v1",
)
SMALL = {"hidden_sizes": [32, 32], "batch_size": 64}
JOB_TIMEOUT_S = 240


@dataclass
class Loop:
    """What the reuse loop left in the service, and a token of each kind."""

    server: Server
    client: ReplaybankClient
    tokens: dict[str, str]
    offline: JobPublic
    collect: JobPublic
    finetuned: JobPublic
    sweep: SweepDetail
    logs: Path


def swept(client: ReplaybankClient, sweep_id: str) -> SweepDetail:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        found = client.get_sweep(sweep_id)
        if found.status != "running":
            assert found.status == "finished" and found.leaderboard.compared == found.train.total, found.model_dump_json()
            return found
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} still running: {found.model_dump_json()}")


def finished(client: ReplaybankClient, job_id: str, logs: Path) -> JobPublic:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if job.status in FINISHED_STATUSES:
            if job.status != "succeeded":
                break
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {job.status} ({job.error}); worker log:\n{(logs / 'worker.log').read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("dashboard")
    with running_server(root) as server, ReplaybankClient(server.url, server.admin_token) as client:
        tokens = {scope: client.create_token(f"ui-{scope}", [scope]).token for scope in ("read", "write", "worker")}
        client.create_dataset(DATASET, SPEC, metadata={"behaviour": "noisy swing-up"})
        client.upload(DATASET, arrays_to_arrow(pendulum_dataset("medium", episodes=4, seed=0), SPEC))
        log = open(root / "worker.log", "ab")
        worker = subprocess.Popen(
            [REPLAYBANK, "worker", "--service", server.url, "--device", "cpu", "--name", "ui-worker", "--wait", "1",
             "--progress-every", "10", "--eval-episodes", "0", "--threads", "1", "--cache-dir", str(root / "cache")],
            env={**os.environ, "REPLAYBANK_TOKEN": tokens["worker"], "OMP_NUM_THREADS": "1"},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        try:
            train = {"kind": "train", "algorithm": "iql", "dataset": DATASET, "steps": 200, "seed": 0, "params": SMALL}
            offline = finished(client, client.submit_job(train).id, root)
            collect = finished(client, client.submit_job({
                "kind": "collect", "dataset": DATASET, "seed": 1,
                "collect": {"policy": offline.policy_id, "episodes": 2, "chunk_steps": 200, "exploration": {"kind": "gaussian", "sigma": 0.2}},
            }).id, root)  # fmt: skip
            finetuned = finished(client, client.submit_job({**train, "parent_policy": offline.policy_id}).id, root)
            evaluate = {"kind": "evaluate", "dataset": DATASET, "evaluate": {"policy": offline.policy_id, "episodes": 2}}
            finished(client, client.submit_job(evaluate).id, root)
            # a split of the four logged episodes that holds out some, not all
            seed = next(seed for seed in range(100) if 0 < held_out(np.arange(4), Split(validation_fraction=0.5, seed=seed)).sum() < 4)
            sweep = swept(client, client.submit_sweep({
                "dataset": DATASET, "version": 1, "algorithms": ["bc"], "params": {"hidden_sizes": [[32, 32]], "batch_size": [64]},
                "seeds": [0, 1], "steps": 200, "split": {"validation_fraction": 0.5, "seed": seed}, "ope_steps": 100, "eval_episodes": 2,
            }).id)  # fmt: skip
            yield Loop(server, client, tokens, offline, collect, finetuned, sweep, root)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        service_unavailable(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context (its own session storage) per test; its last view is saved as a screenshot."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # the console's errors, a refused Content-Security-Policy or a missing file among them; the 401 of a bad
    # token and the 422 of a bad tag, which the tests provoke and the page shows, are not errors of the page
    expected = re.compile(r"Failed to load resource: the server responded with a status of (401|422)\b")
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" and not expected.match(message.text) else None)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
    context.close()
    assert not errors, f"the page reported errors: {errors}"
