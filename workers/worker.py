"""A worker: claims jobs over HTTP and runs them (train, collect, evaluate) until told to stop.

While a job runs, a background thread heartbeats every third of the lease with the latest progress
and metrics; the reply says whether the job was cancelled, and a 409 says the lease was lost (another
worker took the job over after this one went quiet). Either way the job stops at the next step and
the worker claims the next one. Training checkpoints to the service every `checkpoint_seconds`, so a
job re-claimed after a crash resumes from its last checkpoint. SIGTERM (or Ctrl-C) makes the worker
checkpoint, give the job back and exit.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it at the first optimiser, ~2 s: pay that at start, not in a job)

from schemas.dataset import DatasetSpec
from schemas.jobs import Claim, Heartbeat, JobComplete, JobPublic, MetricPoint
from workers.algos.base import OfflineAlgorithm
from workers.algos.data import Normalisation, TransitionArrays, collected_by_policy
from workers.algos.export import export_policy
from workers.algos.replay import training_replay
from workers.algos.training import make_algorithm, restore, train
from workers.client import ReplaybankError
from workers.collect import CollectCursor, collect
from workers.evaluate import evaluate
from workers.jobs_client import JobsClient

log = logging.getLogger("replaybank.worker")

RETRY_SECONDS = 2.0
"""Pause before claiming again after the service could not be reached."""


class JobCancelled(Exception):
    """The job was cancelled; the service already knows, so nothing is reported back."""


class LeaseLost(Exception):
    """Another worker holds the job now; this one must not report anything for it."""


class WorkerStopping(Exception):
    """The worker was asked to stop (SIGTERM); the job is checkpointed and given back."""


@dataclass(frozen=True)
class WorkerOptions:
    device: str | None = None
    """`cpu` or `cuda`; None picks CUDA when torch sees a GPU."""
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    wait_seconds: float = 20.0
    """How long one claim request waits for a job (long-poll)."""
    checkpoint_seconds: float = 60.0
    progress_every: int = 200
    """Gradient steps between progress reports (and checkpoint opportunities)."""
    eval_episodes: int = 5
    """Episodes to evaluate a freshly trained policy in the dataset's environment (0: never)."""
    max_jobs: int | None = None
    """Exit after this many jobs (None: run until stopped)."""
    exit_when_idle: bool = False
    """Exit after a claim finds no job."""
    threads: int | None = None
    """torch intra-op threads (None: torch's default)."""
    cache_dir: Path | None = None


class JobSession:
    """One held job: the lease, what to report, and what the service answered."""

    def __init__(self, client: JobsClient, claim: Claim, stopping: threading.Event) -> None:
        self.client = client
        self.job = claim.job
        self.lease = claim.lease
        self.interval = max(0.2, min(claim.lease_seconds / 3, 20.0))
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.stopping = stopping
        self._lock = threading.Lock()
        self._progress, self._step, self._metrics = 0.0, 0, {}
        self._history: list[MetricPoint] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.job.id}", daemon=True)

    def __enter__(self) -> JobSession:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def report(self, progress: float, step: int, metrics: dict[str, float]) -> None:
        finite = {name: value for name, value in metrics.items() if value == value and abs(value) != float("inf")}
        with self._lock:
            self._progress, self._step = min(max(progress, 0.0), 1.0), step
            if finite:
                self._metrics = finite
                self._history.append(MetricPoint(step=step, values=finite, time=datetime.now(timezone.utc)))

    def beat(self) -> None:
        with self._lock:
            history, self._history = self._history, []
            beat = Heartbeat(progress=self._progress, step=self._step, metrics=self._metrics, history=history)
        try:
            reply = self.client.heartbeat(self.job.id, self.lease, beat)
        except ReplaybankError as error:
            if error.status == 409:
                self.lost.set()
            else:
                # the service is unreachable or failing: keep the points for the next beat
                with self._lock:
                    self._history = history + self._history
                log.warning("heartbeat for job %s failed: %s", self.job.id, error)
            return
        if reply.cancelled:
            self.cancelled.set()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.beat()

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set() or self.stopping.is_set()

    def raise_if_abandoned(self) -> None:
        """Stop work nobody wants any more: the job was cancelled, or another worker holds it."""
        if self.cancelled.is_set():
            raise JobCancelled(self.job.id)
        if self.lost.is_set():
            raise LeaseLost(self.job.id)

    def raise_if_stopped(self) -> None:
        """Also stop when the worker is shutting down (between steps of work that can resume)."""
        self.raise_if_abandoned()
        if self.stopping.is_set():
            raise WorkerStopping(self.job.id)


def best_device(requested: str | None) -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def run_worker(url: str, token: str, device: str | None = None, options: WorkerOptions | None = None) -> int:
    """Claim and run jobs until stopped (SIGTERM/SIGINT, `max_jobs`, or idle with `exit_when_idle`).

    Returns the number of jobs this worker ran to an end (succeeded, failed, cancelled).
    """
    options = options or WorkerOptions()
    device = best_device(device or options.device)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    stopping = threading.Event()
    idle = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after checkpointing the current job", signum)
        stopping.set()
        if idle.is_set():
            # nothing held: abandon the waiting claim at once
            raise WorkerStopping("idle")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    ran = 0
    try:
        with JobsClient(url, token, cache=options.cache_dir) as client:
            while not stopping.is_set() and (options.max_jobs is None or ran < options.max_jobs):
                try:
                    idle.set()
                    try:
                        claim = client.claim_job(options.name, device, options.wait_seconds)
                    finally:
                        idle.clear()
                except WorkerStopping:
                    break
                except ReplaybankError as error:
                    if not _transient(error):
                        raise
                    log.warning("could not claim: %s; retrying in %.0f s", error, RETRY_SECONDS)
                    stopping.wait(RETRY_SECONDS)
                    continue
                if claim is None:
                    if options.exit_when_idle:
                        break
                    continue
                if stopping.is_set():
                    _quietly(lambda: client.release_job(claim.job.id, claim.lease))
                    break
                if run_job(client, claim, device, options, stopping):
                    ran += 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ran


def run_job(client: JobsClient, claim: Claim, device: str, options: WorkerOptions, stopping: threading.Event) -> bool:
    """Run one claimed job to its end and report it; False when it was given back unfinished."""
    job = claim.job
    log.info("job %s (%s, attempt %d) on %s@%d", job.id, job.kind, job.attempts, job.dataset, job.version)
    runners: dict[str, Callable[[JobSession, str, WorkerOptions], JobComplete]] = {
        "train": run_train,
        "collect": run_collect,
        "evaluate": run_evaluate,
    }
    with JobSession(client, claim, stopping) as session:
        try:
            done = runners[job.kind](session, device, options)
            session.beat()  # the metric points since the last heartbeat belong to the curve too
            session.raise_if_abandoned()
            client.complete_job(job.id, claim.lease, done)
            log.info("job %s succeeded", job.id)
            return True
        except JobCancelled:
            log.info("job %s was cancelled", job.id)
            return True
        except LeaseLost:
            log.warning("job %s: lease lost to another worker; dropping it", job.id)
            return False
        except WorkerStopping:
            session.beat()
            _quietly(lambda: client.release_job(job.id, claim.lease))
            log.info("job %s given back", job.id)
            return False
        except ReplaybankError as error:
            if error.status == 409 and error.code in ("lease_lost", "cancelled"):
                log.warning("job %s: %s", job.id, error.message)
                return error.code == "cancelled"
            if _transient(error):
                # the service is away: leave the job to lapse and be retried from its last checkpoint
                log.warning("job %s: the service did not answer (%s); dropping the job", job.id, error)
                return False
            report = f"{error}\n{traceback.format_exc()}"
            _quietly(lambda: client.fail_job(job.id, claim.lease, report))
            return True
        except Exception as error:  # the job failed, not the worker: report it and take the next one
            log.exception("job %s failed", job.id)
            report = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
            _quietly(lambda: client.fail_job(job.id, claim.lease, report))
            return True


def _transient(error: ReplaybankError) -> bool:
    """The service could not be reached or is restarting, as opposed to refusing the request."""
    return error.status in (0, 502, 503, 504)


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except ReplaybankError as error:
        log.warning("could not report to the service: %s", error)


def _spec(client: JobsClient, job: JobPublic) -> DatasetSpec:
    dataset = client.get_dataset(job.dataset)
    return DatasetSpec(observation=dataset.observation, action=dataset.action, env_id=dataset.env_id)


# --- train ------------------------------------------------------------------------------------------------


def _pull_arrays(client: JobsClient, job: JobPublic) -> tuple[TransitionArrays, np.ndarray | None]:
    """The job's version as training arrays, and which of its rows policies collected (when the job asks)."""
    table = client.pull(job.dataset, job.version)
    online = collected_by_policy(table) if job.online_fraction is not None else None
    return TransitionArrays.from_arrow(table), online


def run_train(session: JobSession, device: str, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    assert job.algorithm is not None and job.steps is not None
    run_device = "cpu" if job.device == "cpu" else device
    spec = _spec(client, job)
    data, online = _pull_arrays(client, job)
    session.raise_if_stopped()

    parent_state: dict[str, Any] | None = None
    if job.parent_policy is not None:
        parent = client.get_policy(job.parent_policy)
        # the parent's networks expect the parent's inputs: keep its normalisation
        normalisation = _normalisation_of_card(parent.card)
        # weights_only: what comes over the network is loaded as tensors and numbers, never as code
        parent_state = torch.load(io.BytesIO(client.policy_artifact(parent.id, "state")), map_location=run_device, weights_only=True)
    else:
        normalisation = Normalisation.from_arrays(data)
    algorithm = make_algorithm(job.algorithm, job.params, spec, normalisation, run_device, job.seed, total_steps=job.steps)
    replay = training_replay(data, normalisation, spec.action, algorithm.device, job.seed, job.online_fraction, online)

    saved = client.get_checkpoint(job.id)
    prepared: dict[str, str] = {}
    if saved is not None:
        resumed_step, payload = saved
        restore(algorithm, replay, torch.load(io.BytesIO(payload), map_location=run_device, weights_only=True))
        log.info("job %s resumes from step %d", job.id, resumed_step)
    else:
        resumed_step = 0
        if parent_state is not None:
            start_from_parent(algorithm, parent_state)
        prepared = algorithm.prepare(data, StoredParts(session))
    start = time.monotonic()
    last_checkpoint = time.monotonic()

    def on_progress(step: int, metrics: dict[str, float]) -> None:
        session.report(step / job.steps, step, metrics)

    def on_checkpoint(state: dict[str, Any]) -> None:
        nonlocal last_checkpoint
        if session.cancelled.is_set() or session.lost.is_set():
            return
        if not session.stopping.is_set() and time.monotonic() - last_checkpoint < options.checkpoint_seconds:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        client.put_checkpoint(job.id, session.lease, algorithm.step, buffer.getvalue())
        last_checkpoint = time.monotonic()

    result = train(
        algorithm,
        replay,
        job.steps,
        algorithm.params.batch_size,
        on_progress=on_progress,
        progress_every=options.progress_every,
        should_stop=session.should_stop,
        on_checkpoint=on_checkpoint,
        checkpoint_every=options.progress_every,
    )
    if result.stopped:
        session.raise_if_stopped()
    metrics = dict(result.metrics)
    with tempfile.TemporaryDirectory(prefix="replaybank-policy-") as folder:
        card_extra = {
            "dataset": job.dataset,
            "version": job.version,
            "job_id": job.id,
            "parent_policy": job.parent_policy,
            "online_fraction": job.online_fraction,
            "training_seconds": time.monotonic() - start,
            "resumed_from_step": resumed_step,
        }
        export_policy(algorithm, folder, card_extra=card_extra)
        torch.save(algorithm.state_dict(), Path(folder) / "state.pt")
        if options.eval_episodes > 0 and spec.env_id:
            evaluation = _evaluate_folder(folder, spec.env_id, options.eval_episodes, job.seed)
            card = json.loads((Path(folder) / "card.json").read_text())
            card["evaluations"] = [evaluation | {"job_id": job.id}]
            (Path(folder) / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
            metrics["eval/return_mean"] = evaluation["mean"]
        session.raise_if_abandoned()
        client.upload_policy(job.id, session.lease, folder)
    session.report(1.0, result.step, metrics)
    outcome: dict[str, Any] = {"resumed_from_step": resumed_step, "step": result.step, **prepared}
    return JobComplete(metrics=metrics, result=outcome)


@dataclass(frozen=True)
class StoredParts:
    """`PreparedParts` kept with the service, beside the job's dataset version (COMBO's dynamics model)."""

    session: JobSession

    def get(self, key: str) -> bytes | None:
        return self.session.client.get_dynamics(self.session.job.id, key)

    def put(self, key: str, blob: bytes) -> None:
        self.session.client.put_dynamics(self.session.job.id, self.session.lease, key, blob)


def start_from_parent(algorithm: OfflineAlgorithm, state: dict[str, Any]) -> None:
    """Fine-tuning: the parent's networks and optimiser moments, with a fresh step count and schedules.

    Learning-rate schedules restart, so a parent that finished a cosine decay still learns; the
    optimisers' rates go back to where their schedules began.
    """
    fresh = {name: (None if name.endswith("_schedule") else value) for name, value in state.items()}
    fresh["step"] = 0
    algorithm.load_state_dict(fresh)
    for optimiser in algorithm.optimisers():
        for group in optimiser.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])


def _normalisation_of_card(card: dict[str, Any]) -> Normalisation:
    values = card["normalisation"]
    return Normalisation(
        observation_mean=np.asarray(values["observation_mean"], dtype=np.float32),
        observation_std=np.asarray(values["observation_std"], dtype=np.float32),
        reward_scale=float(values["reward_scale"]),
    )


def _evaluate_folder(folder: str | Path, env_id: str, episodes: int, seed: int) -> dict[str, Any]:
    return evaluate(Path(folder), env_id, episodes=episodes, seed=seed)


# --- collect ----------------------------------------------------------------------------------------------


def run_collect(session: JobSession, device: str, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    assert job.collect is not None
    spec = _spec(client, job)
    saved = client.get_checkpoint(job.id)
    progress = json.loads(saved[1]) if saved is not None else {"cursor": {}, "versions": [], "rows": 0, "returns": []}
    cursor = CollectCursor(**progress["cursor"])
    budget = job.collect.episodes or job.collect.steps or 1
    with tempfile.TemporaryDirectory(prefix="replaybank-collect-") as folder:
        client.download_policy(job.collect.policy, folder, formats=("onnx",))
        chunks = collect(
            Path(folder),
            spec,
            job_id=job.id,
            policy_id=job.collect.policy,
            seed=job.seed,
            episodes=job.collect.episodes,
            steps=job.collect.steps,
            exploration=job.collect.exploration,
            chunk_steps=job.collect.chunk_steps,
            start=cursor,
        )
        for chunk in chunks:
            session.raise_if_stopped()
            with client.holding(session.lease):
                appended = client.upload(job.dataset, chunk.table, idempotency_key=chunk.idempotency_key)
            progress = {
                "cursor": vars(chunk.cursor),
                "versions": [*progress["versions"], appended.version],
                "rows": progress["rows"] + appended.rows,
                "returns": [*progress["returns"], *chunk.returns],
            }
            client.put_checkpoint(job.id, session.lease, chunk.cursor.steps, json.dumps(progress).encode())
            done = chunk.cursor.episodes if job.collect.episodes else chunk.cursor.steps
            returns = progress["returns"]
            session.report(done / budget, chunk.cursor.steps, {"return_mean": sum(returns) / len(returns), "rows": progress["rows"]})
    returns = progress["returns"]
    metrics = {"return_mean": sum(returns) / len(returns)} if returns else {}
    result = {
        "versions": progress["versions"],
        "rows": progress["rows"],
        "episodes": progress["cursor"].get("episodes", 0),
        "returns": returns,
    }
    return JobComplete(metrics=metrics | {"rows": float(progress["rows"])}, result=result)


# --- evaluate ---------------------------------------------------------------------------------------------


def run_evaluate(session: JobSession, device: str, options: WorkerOptions) -> JobComplete:
    client, job = session.client, session.job
    assert job.evaluate is not None
    spec = _spec(client, job)
    assert spec.env_id is not None
    with tempfile.TemporaryDirectory(prefix="replaybank-evaluate-") as folder:
        client.download_policy(job.evaluate.policy, folder, formats=("onnx",))
        evaluation = _evaluate_folder(folder, spec.env_id, job.evaluate.episodes, job.seed)
    session.report(1.0, job.evaluate.episodes, {"return_mean": evaluation["mean"]})
    return JobComplete(
        metrics={"return_mean": evaluation["mean"], "return_std": evaluation["std"]},
        result={"returns": evaluation["returns"], "lengths": evaluation["lengths"]},
    )
