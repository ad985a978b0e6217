"""A worker: claims jobs over HTTP and runs them (train, collect, evaluate) until told to stop.

Each claimed job runs in a `JobSession` (session.py: the lease and its heartbeats) through the runner
for its kind (train.py, collect.py, evaluate.py, or ope.py for an offline evaluation); when the runner raises, retry.py decides what becomes
of the job. The worker counts as one of the machine's training processes for its whole life
(`CoreShare`), so workers side by side split the cores instead of fighting over them. SIGTERM (or
Ctrl-C) makes the worker checkpoint, give the job back and exit; while it only waits for a claim, it
exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime  # noqa: F401  (the imports below load large libraries while holding the GIL, which would
import onnxscript  # noqa: F401  stall a job's heartbeats; pay them at start: ONNX export, evaluation)
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it at the first optimiser, ~2 s: pay that at start, not in a job)

from schemas.jobs import Claim, JobComplete, JobPublic
from workers.client import ReplaybankClient, ReplaybankError
from workers.runtime.collect import run_collect
from workers.runtime.evaluate import run_evaluate
from workers.runtime.ope import run_offline_evaluate
from workers.runtime.retry import quietly, settle_failure
from workers.runtime.session import JobSession, WorkerStopping
from workers.runtime.threads import CoreShare
from workers.runtime.train import run_train

log = logging.getLogger("replaybank.worker")

RETRY_SECONDS = 2.0
"""Pause before claiming again after the service could not be reached."""
HEARTBEAT_TIMEOUT_SECONDS = 10.0
"""A heartbeat unanswered this long is sent again (the service answers one in milliseconds when well)."""


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
    """torch intra-op threads (None: measured within this worker's share of the cores, see threads.py)."""
    cache_dir: Path | None = None
    memory_budget: int | None = None
    """Bytes a train job's version may take on the training device; a larger one is streamed from the
    file cache (see job_rows.py). None: always resident."""


@dataclass(frozen=True)
class Host:
    """What the machine gives a job: the device to train on, and this worker's share of the CPU cores."""

    device: str
    cores: CoreShare


Runner = Callable[[JobSession, Host, WorkerOptions], JobComplete]

RUNNERS: dict[str, Runner] = {"train": run_train, "collect": run_collect, "evaluate": run_evaluate}
"""The runner of each job kind: runs the held job and returns what to report on success."""


def runner_for(job: JobPublic) -> Runner:
    """Evaluate jobs with an "fqe" or "model" method estimate offline, with no environment."""
    if job.evaluate is not None and job.evaluate.method != "env":
        return run_offline_evaluate
    return RUNNERS[job.kind]


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
        # Heartbeats go over a connection of their own, never queued behind the job's transfers.
        with (
            ReplaybankClient(url, token, cache=options.cache_dir) as client,
            ReplaybankClient(url, token, timeout=HEARTBEAT_TIMEOUT_SECONDS) as heartbeats,
            CoreShare() as cores,
        ):
            host = Host(device, cores)
            while not stopping.is_set() and (options.max_jobs is None or ran < options.max_jobs):
                try:
                    idle.set()
                    try:
                        claim = client.claim_job(options.name, device, options.wait_seconds, options.threads or cores.threads())
                    finally:
                        idle.clear()
                except WorkerStopping:
                    break
                except ReplaybankError as error:
                    if not error.transient:
                        raise
                    log.warning("could not claim: %s; retrying in %.0f s", error, RETRY_SECONDS)
                    stopping.wait(RETRY_SECONDS)
                    continue
                if claim is None:
                    if options.exit_when_idle:
                        break
                    continue
                if stopping.is_set():
                    quietly(lambda: client.release_job(claim.job.id, claim.lease))
                    break
                if run_job(client, heartbeats, claim, host, options, stopping):
                    ran += 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ran


def run_job(
    client: ReplaybankClient,
    heartbeats: ReplaybankClient,
    claim: Claim,
    host: Host,
    options: WorkerOptions,
    stopping: threading.Event,
) -> bool:
    """Run one claimed job to its end and report it; False when it went back to the queue unfinished."""
    job = claim.job
    log.info("job %s (%s, attempt %d) on %s@%d", job.id, job.kind, job.attempts, job.dataset, job.version)
    with JobSession(client, heartbeats, claim, stopping) as session:
        try:
            done = runner_for(job)(session, host, options)
            session.beat()  # the metric points since the last heartbeat belong to the curve too
            session.raise_if_abandoned()
            client.complete_job(job.id, claim.lease, done)
            log.info("job %s succeeded", job.id)
            return True
        except Exception as error:
            return settle_failure(session, error)
