"""One held job: its lease, the heartbeats that keep it, and what the service answered.

While a job runs, a background thread heartbeats every third of the lease (counted from the start of
the last beat, so a slow answer does not push the next one back) with the latest progress and
metrics, over a client of its own, so a beat never waits behind the job's transfers. The reply says
whether the job was cancelled, and a 409 says the lease was lost (another worker took the job over
after this one went quiet). The runner asks the session between steps of
work and stops by raising one of the exceptions below; `retry.py` decides what each means for the job.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from schemas.dataset import DatasetSpec
from schemas.jobs import Claim, Heartbeat, MetricPoint
from workers.client import ReplaybankClient, ReplaybankError

log = logging.getLogger("replaybank.worker")


class JobCancelled(Exception):
    """The job was cancelled; the service already knows, so nothing is reported back."""


class LeaseLost(Exception):
    """Another worker holds the job now; this one must not report anything for it."""


class WorkerStopping(Exception):
    """The worker was asked to stop (SIGTERM); the job is checkpointed and given back."""


class JobSession:
    """One held job: the lease, what to report, and what the service answered."""

    def __init__(self, client: ReplaybankClient, heartbeats: ReplaybankClient, claim: Claim, stopping: threading.Event) -> None:
        self.client = client
        self.heartbeats = heartbeats
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

    def dataset_spec(self) -> DatasetSpec:
        """The spec of the job's dataset."""
        dataset = self.client.get_dataset(self.job.dataset)
        return DatasetSpec(observation=dataset.observation, action=dataset.action, env_id=dataset.env_id)

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
            reply = self.heartbeats.heartbeat(self.job.id, self.lease, beat)
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
        due = time.monotonic() + self.interval
        while not self._done.wait(max(0.0, due - time.monotonic())):
            due = time.monotonic() + self.interval
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
