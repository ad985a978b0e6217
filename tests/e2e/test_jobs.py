"""Jobs end to end: a real `replaybank serve` on Redis (or the embedded queue) and `replaybank worker`
subprocesses training IQL on a small Pendulum dataset. Budgets are tiny: a few hundred steps of small
networks on one thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from schemas.jobs import FINISHED_STATUSES, JobPublic
from tests.e2e.conftest import Server, running_server
from workers.client import ReplaybankClient, ReplaybankError
from workers.files import upload_schema

pytestmark = pytest.mark.slow

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
SPEC = DatasetSpec(
    observation=ObservationSpec(shape=[3]),
    action=ContinuousActionSpec(shape=[1], low=[-2.0], high=[2.0]),
    env_id="Pendulum-v1",
)
SMALL = {"hidden_sizes": [32, 32], "batch_size": 64}
TINY_COMBO = {
    **SMALL,
    "ensemble_size": 2,
    "elites": 1,
    "dynamics_hidden_sizes": [16, 16],
    "max_dynamics_epochs": 2,
    "rollout_batch_size": 64,
    "rollout_interval": 25,
    "sampled_actions": 2,
}
LEASE_SECONDS = 2


def pendulum_rows(
    episodes: int, length: int = 100, first_episode: int = 0, shift: float = 0.0, seed: int = 0, spec: DatasetSpec = SPEC
) -> pa.Table:
    """Random-action rows (Pendulum-like unless `spec` says otherwise); `shift` moves every observation,
    to tell versions apart."""
    assert isinstance(spec.action, ContinuousActionSpec)
    rng = np.random.default_rng(seed)
    n = episodes * length
    step = np.tile(np.arange(length), episodes)
    size, actions = spec.observation.size, spec.action.size

    def observations() -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array((rng.normal(size=n * size) + shift).astype(np.float32)), size)

    low, high = np.asarray(spec.action.low, np.float32), np.asarray(spec.action.high, np.float32)
    columns = [
        pa.array(first_episode + np.repeat(np.arange(episodes), length), pa.int64()),
        pa.array(step, pa.int32()),
        observations(),
        pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(low, high, (n, actions)).astype(np.float32).ravel()), actions),
        pa.array(-rng.uniform(0, 10, n).astype(np.float32)),
        observations(),
        pa.array(np.zeros(n, dtype=bool)),
        pa.array(step == length - 1),
        pa.array(["logged"] * n),
    ]
    return pa.Table.from_arrays(columns, schema=upload_schema(spec))


@pytest.fixture
def queue_kind() -> str:
    """Redis unless a test parametrises it (the queue suite itself runs on both in tests/service)."""
    return "redis"


@pytest.fixture
def service_settings() -> dict[str, str]:
    """More settings for the service, where a test parametrises them."""
    return {}


@pytest.fixture
def service(queue_kind: str, service_settings: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """`replaybank serve` with a short lease, on Redis or on the embedded queue."""
    settings = {"REPLAYBANK_LEASE_SECONDS": str(LEASE_SECONDS), **service_settings}
    if queue_kind == "redis":
        settings["REPLAYBANK_REDIS_URL"] = request.getfixturevalue("redis_url")
    with running_server(tmp_path, settings) as running:
        yield running


@pytest.fixture
def client(service, tmp_path: Path) -> Iterator[ReplaybankClient]:
    with ReplaybankClient(service.url, service.admin_token, cache=tmp_path / "user-cache") as client:
        client.create_dataset("pendulum", SPEC)
        client.upload("pendulum", pendulum_rows(episodes=4))
        yield client


def start_worker_process(
    url: str, token: str, folder: Path, *extra: str, name: str = "w", pythonpath: Path | None = None
) -> subprocess.Popen:
    """A `replaybank worker` on one CPU thread, its log `folder`/worker-`name`.log (where `wait_for` looks)
    and its cache `folder`/cache-`name`; `pythonpath` puts a folder first on its import path (to hide a
    package from it)."""
    log = open(folder / f"worker-{name}.log", "ab")
    command = [
        REPLAYBANK, "worker", "--service", url, "--token", token, "--device", "cpu", "--name", name,
        "--wait", "1", "--checkpoint-seconds", "0.5", "--progress-every", "20", "--eval-episodes", "0",
        "--threads", "1", "--cache-dir", str(folder / f"cache-{name}"), *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return process


@pytest.fixture
def start_worker(service, client: ReplaybankClient, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    secret = client.create_token("e2e-worker", ["worker"]).token
    started: list[subprocess.Popen] = []

    def start(*extra: str, name: str = "w", pythonpath: Path | None = None) -> subprocess.Popen:
        process = start_worker_process(service.url, secret, tmp_path, *extra, name=name, pythonpath=pythonpath)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def wait_for(client: ReplaybankClient, job_id: str, done: Callable[[JobPublic], bool], timeout: float, logs: Path) -> JobPublic:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(job_id)
        if done(job):
            return job
        if job.status in FINISHED_STATUSES:
            break
        time.sleep(0.2)
    worker_logs = "\n".join(path.read_text(errors="replace")[-3000:] for path in sorted(logs.glob("worker-*.log")))
    raise AssertionError(f"job {job_id} is {job.status} ({job.error}); worker logs:\n{worker_logs}")


def train(client: ReplaybankClient, steps: int, **fields: Any) -> JobPublic:
    body = {"kind": "train", "algorithm": "iql", "dataset": "pendulum", "steps": steps, "seed": 0, "params": SMALL}
    return client.submit_job(body | fields)


def cli(service: Server, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "REPLAYBANK_URL": service.url, "REPLAYBANK_TOKEN": service.admin_token}
    return subprocess.run([REPLAYBANK, *arguments], env=env, capture_output=True, text=True, timeout=timeout)


def test_train_watch_download_and_run_the_policy_without_replaybank(service, client, start_worker, tmp_path) -> None:
    import onnxruntime

    submitted = cli(service, "train", "pendulum", "-a", "iql", "--steps", "200", "-p", "hidden_sizes=[32,32]", "-p", "batch_size=64")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    # new data with shifted observations lands after submission: the job must train on version 1
    client.upload("pendulum", pendulum_rows(episodes=4, first_episode=100, shift=50.0, seed=1))
    worker = start_worker("--max-jobs", "1")
    watched = cli(service, "watch", job_id, timeout=180)
    assert watched.returncode == 0, watched.stderr
    done = client.get_job(job_id)
    assert worker.wait(timeout=60) == 0
    assert f"job {job_id} succeeded: policy {done.policy_id}" in watched.stdout
    assert (done.version, done.requested_version, done.attempts, done.progress) == (1, "latest", 1, 1.0)
    assert done.policy_id is not None and "critic_loss" in done.metrics
    assert len(client.job_metrics(job_id)) >= 5  # a learning curve, not only the last values
    listed = cli(service, "jobs")
    assert job_id in listed.stdout and "succeeded" in listed.stdout

    policy = client.get_policy(done.policy_id)
    assert (policy.dataset, policy.version, policy.job_id, policy.algorithm) == ("pendulum", 1, job_id, "iql")
    mean = np.asarray(policy.card["normalisation"]["observation_mean"])
    assert np.all(np.abs(mean) < 1.0)  # version 2's observations sit near 50: not in this policy's data

    downloaded = cli(service, "download", policy.id, "--out", str(tmp_path / "policy"))
    assert downloaded.returncode == 0, downloaded.stderr
    assert sorted(path.name for path in (tmp_path / "policy").iterdir()) == ["card.json", "policy.onnx", "policy.pt2"]
    session = onnxruntime.InferenceSession(str(tmp_path / "policy" / "policy.onnx"), providers=["CPUExecutionProvider"])
    observations = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    [actions] = session.run(None, {session.get_inputs()[0].name: observations})
    assert actions.shape == (5, 1) and actions.dtype == np.float32
    assert np.all((actions >= -2.0) & (actions <= 2.0))


@pytest.mark.parametrize("queue_kind", ["redis", "embedded"])
def test_a_killed_worker_job_finishes_from_its_checkpoint_on_another_worker(client, start_worker, tmp_path) -> None:
    job = train(client, steps=1000)
    first = start_worker(name="first")
    wait_for(client, job.id, lambda job: (job.checkpoint_step or 0) > 0, 120, tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    checkpointed = client.get_job(job.id).checkpoint_step
    assert checkpointed is not None and 0 < checkpointed < 1000

    second = start_worker("--max-jobs", "1", name="second")
    done = wait_for(client, job.id, lambda job: job.status == "succeeded", 240, tmp_path)
    assert second.wait(timeout=60) == 0
    assert done.attempts == 2
    assert done.result["resumed_from_step"] >= checkpointed
    assert done.worker == "second"


def test_cancel_stops_the_job_and_the_worker_takes_the_next(client, start_worker, tmp_path) -> None:
    long = train(client, steps=1_000_000)
    worker = start_worker("--max-jobs", "2")
    wait_for(client, long.id, lambda job: job.status == "running" and job.step > 0, 120, tmp_path)
    short = train(client, steps=100)
    assert client.cancel_job(long.id).status == "cancelled"
    done = wait_for(client, short.id, lambda job: job.status == "succeeded", 180, tmp_path)
    assert worker.wait(timeout=60) == 0
    cancelled = client.get_job(long.id)
    assert cancelled.status == "cancelled" and cancelled.policy_id is None and cancelled.step < 1_000_000
    assert done.worker == cancelled.worker


def test_watch_says_why_a_job_went_back_to_the_queue(service, client, tmp_path) -> None:
    job = train(client, steps=100)
    assert client.claim_job("vanishing", "cpu", wait=5) is not None  # and never heard from again
    env = {**os.environ, "REPLAYBANK_URL": service.url, "REPLAYBANK_TOKEN": service.admin_token}
    watcher = subprocess.Popen([REPLAYBANK, "watch", job.id], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        requeued = wait_for(client, job.id, lambda job: job.status == "queued", 8 * LEASE_SECONDS, tmp_path)
        assert "worker vanishing was last heard from" in requeued.error
        time.sleep(1.0)  # a poll or an event for the watcher to see it by
        client.cancel_job(job.id)
        out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    assert watcher.returncode == 1 and f"job {job.id} cancelled" in out
    assert "attempt 1 of 3: worker vanishing was last heard from at" in err


def test_bad_parameters_are_refused_naming_the_field(service, client) -> None:
    typo = cli(service, "train", "pendulum", "-a", "iql", "-p", "expectile=1.5")
    assert typo.returncode != 0 and "params.expectile" in typo.stderr
    with pytest.raises(ReplaybankError) as refused:
        train(client, steps=100, params={"expectile": 1.5})
    assert (refused.value.status, refused.value.field) == (422, "params.expectile")
    with pytest.raises(ReplaybankError) as unknown:
        train(client, steps=100, params={"expectiles": 0.5})
    assert (unknown.value.status, unknown.value.field) == (422, "params.expectiles")
    # The service's own check: this version holds logged rows only, nothing for an online share to draw.
    no_online_rows = cli(service, "train", "pendulum", "-a", "iql", "--online-fraction", "0.5")
    assert no_online_rows.returncode != 0 and "online_fraction" in no_online_rows.stderr
    assert "has none" in no_online_rows.stderr
    assert client.list_jobs().count == 0


def test_sigterm_checkpoints_and_gives_the_job_back(client, start_worker, tmp_path) -> None:
    job = train(client, steps=100_000)
    worker = start_worker(name="terminated")
    wait_for(client, job.id, lambda job: job.status == "running" and job.step > 0, 120, tmp_path)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    released = client.get_job(job.id)
    assert released.status == "queued" and released.attempts == 0
    assert released.checkpoint_step is not None and released.checkpoint_step > 0


def test_collect_fine_tune_and_evaluate(client, start_worker, tmp_path) -> None:
    """The reuse loop once: train, collect with that policy (two chunks, two versions), fine-tune from
    the first policy on the grown version, evaluate the result."""
    first = train(client, steps=100)
    worker = start_worker("--max-jobs", "4")
    trained = wait_for(client, first.id, lambda job: job.status == "succeeded", 180, tmp_path)
    assert trained.policy_id is not None

    collect = client.submit_job(
        {
            "kind": "collect",
            "dataset": "pendulum",
            "seed": 1,
            "collect": {"policy": trained.policy_id, "episodes": 2, "chunk_steps": 150, "exploration": {"kind": "gaussian", "sigma": 0.2}},
        }
    )
    collected = wait_for(client, collect.id, lambda job: job.status == "succeeded", 120, tmp_path)
    assert collected.result["versions"] == [2, 3] and collected.result["rows"] == 400  # Pendulum: 200 steps
    grown = client.query("pendulum", "SELECT source, count(*) AS n FROM transitions GROUP BY source ORDER BY source", version=3)
    assert [tuple(row) for row in grown.rows] == [("logged", 400), (f"policy:{trained.policy_id}", 400)]

    # Half of every batch from the 400 collected rows, half from the 400 logged ones.
    tuned_job = train(client, steps=100, parent_policy=trained.policy_id, params={"expectile": 0.8}, online_fraction=0.5)
    assert tuned_job.version == 3 and tuned_job.params["hidden_sizes"] == [32, 32]  # the parent's, not the default
    tuned = wait_for(client, tuned_job.id, lambda job: job.status == "succeeded", 180, tmp_path)
    card = client.get_policy(tuned.policy_id).card
    assert (card["parent_policy"], card["version"], card["params"]["expectile"]) == (trained.policy_id, 3, 0.8)
    assert card["online_fraction"] == 0.5

    evaluation = client.submit_job({"kind": "evaluate", "dataset": "pendulum", "evaluate": {"policy": tuned.policy_id, "episodes": 2}})
    wait_for(client, evaluation.id, lambda job: job.status == "succeeded", 120, tmp_path)
    assert worker.wait(timeout=60) == 0
    [evaluated] = client.get_policy(tuned.policy_id).card["evaluations"]
    assert evaluated["job_id"] == evaluation.id and len(evaluated["returns"]) == 2
    assert all(value < 0 for value in evaluated["returns"])  # Pendulum's rewards are costs


def test_a_killed_collector_leaves_whole_chunks_and_its_retry_adds_no_duplicates(client, start_worker, tmp_path) -> None:
    first = start_worker("--max-jobs", "2", name="first")
    trained = wait_for(client, train(client, steps=50).id, lambda job: job.status == "succeeded", 180, tmp_path)
    options = {"policy": trained.policy_id, "episodes": 30, "chunk_steps": 200, "exploration": {"kind": "epsilon", "epsilon": 0.1}}
    job = client.submit_job({"kind": "collect", "dataset": "pendulum", "seed": 2, "collect": options})
    wait_for(client, job.id, lambda job: (job.checkpoint_step or 0) > 0, 120, tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    collected = f"policy:{trained.policy_id}"
    per_episode = "SELECT source, episode_id, count(*), bool_or(truncated OR terminal) FROM transitions GROUP BY ALL"
    partial = [row[1:] for row in client.query("pendulum", per_episode).rows if row[0] == collected]
    assert 1 <= len(partial) < 30
    assert all(rows == 200 and ended for _, rows, ended in partial)  # whole episodes only

    start_worker("--max-jobs", "1", name="second")
    done = wait_for(client, job.id, lambda job: job.status == "succeeded", 180, tmp_path)
    assert done.attempts == 2
    totals = "SELECT source, count(*), count(DISTINCT (episode_id, step)), count(DISTINCT episode_id) FROM transitions GROUP BY ALL"
    final = [row[1:] for row in client.query("pendulum", totals).rows if row[0] == collected]
    assert final == [[30 * 200, 30 * 200, 30]]


def test_combo_trains_its_dynamics_model_once_per_version(client, start_worker, tmp_path) -> None:
    jobs = [train(client, steps=50, algorithm="combo", params=TINY_COMBO, seed=seed) for seed in (0, 1)]
    worker = start_worker("--max-jobs", "2")
    done = [wait_for(client, job.id, lambda job: job.status == "succeeded", 180, tmp_path) for job in jobs]
    assert worker.wait(timeout=60) == 0
    assert [job.result["dynamics"] for job in done] == ["trained", "reused"]


def test_a_worker_that_hangs_up_while_waiting_is_handed_no_job(service, client) -> None:
    headers = {"Authorization": f"Bearer {client.create_token('impatient', ['worker']).token}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{service.url}/v1/workers/claim", json={"wait": 30}, headers=headers, timeout=1)
    time.sleep(1)  # the service notices the hang-up within half a second
    job = train(client, steps=10)
    claimed = httpx.post(f"{service.url}/v1/workers/claim", json={"wait": 5}, headers=headers, timeout=10)
    assert claimed.status_code == 200
    assert (claimed.json()["job"]["id"], claimed.json()["job"]["attempts"]) == (job.id, 1)


@pytest.mark.parametrize(
    ("env_id", "reason"),
    [
        ("NoSuchEnvironment-v0", "cannot make environment 'NoSuchEnvironment-v0': "),
        ("MountainCarContinuous-v0", "the policy takes observations of shape [3], but MountainCarContinuous-v0 gives observations of shape [2]"),  # two numbers, not three
    ],
)
def test_a_finished_training_is_kept_when_its_evaluation_cannot_run(env_id, reason, service, client, start_worker, tmp_path) -> None:
    client.create_dataset("elsewhere", SPEC.model_copy(update={"env_id": env_id}))
    client.upload("elsewhere", pendulum_rows(episodes=2))
    job = train(client, steps=40, dataset="elsewhere")
    worker = start_worker("--max-jobs", "1", "--eval-episodes", "2")
    done = wait_for(client, job.id, lambda job: job.status == "succeeded", 180, tmp_path)
    assert worker.wait(timeout=60) == 0
    assert done.attempts == 1 and done.policy_id is not None
    assert done.result["evaluation_skipped"].startswith(reason)
    assert "eval/return_mean" not in done.metrics

    card = client.get_policy(done.policy_id).card
    assert card["evaluation_skipped"] == done.result["evaluation_skipped"] and card.get("evaluations", []) == []
    downloaded = cli(service, "download", done.policy_id, "--out", str(tmp_path / "policy"))
    assert downloaded.returncode == 0, downloaded.stderr
    assert {"card.json", "policy.onnx"} <= {path.name for path in (tmp_path / "policy").iterdir()}


WALKER = DatasetSpec(
    observation=ObservationSpec(shape=[24]),
    action=ContinuousActionSpec(shape=[4], low=[-1.0] * 4, high=[1.0] * 4),
    env_id="BipedalWalker-v3",
)


@pytest.mark.parametrize("service_settings", [{"REPLAYBANK_MAX_ATTEMPTS": "2"}])
def test_a_worker_without_the_environment_gives_the_job_back_and_the_last_attempt_names_the_package(
    client, start_worker, tmp_path
) -> None:
    # This worker's install lacks Box2D: a package of that name that cannot be imported hides the real one.
    hidden = tmp_path / "without-box2d"
    (hidden / "Box2D").mkdir(parents=True)
    (hidden / "Box2D" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'Box2D'\", name='Box2D')\n")
    client.create_dataset("walker", WALKER)
    client.upload("walker", pendulum_rows(episodes=2, spec=WALKER))
    start_worker("--eval-episodes", "1", name="no-box2d", pythonpath=hidden)

    trained = wait_for(client, train(client, steps=30, dataset="walker").id, lambda job: job.status == "succeeded", 180, tmp_path)
    assert "Box2D is not installed" in trained.result["evaluation_skipped"]  # the training is kept all the same

    job = client.submit_job({"kind": "evaluate", "dataset": "walker", "evaluate": {"policy": trained.policy_id, "episodes": 1}})
    failed = wait_for(client, job.id, lambda job: job.status == "failed", 120, tmp_path)
    assert failed.attempts == 2
    assert failed.error.startswith("gave up after 2 attempts: cannot make environment 'BipedalWalker-v3': Box2D is not installed")
    log = (tmp_path / "worker-no-box2d.log").read_text()
    assert log.count("giving it back for another worker") == 2 and "Traceback" not in log
