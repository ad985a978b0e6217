"""The worker protocol: claim (long-poll), heartbeat, complete, fail, release; checkpoints and COMBO dynamics
models; and the sweeper that requeues jobs whose worker fell silent.

Every call about a held job checks the lease token against the job's row (`held_job`), and heartbeats
also renew the lease in the queue, which fails once the lease lapsed and another worker took the job
over: the late worker is told so (409 `lease_lost`) and drops the job. How many attempts a job has used
is the queue's to say (see `service.queue.base`); the row records what the queue said.

Silence is judged on the queue's clock, the one its leases lapse on: claims, heartbeats and checkpoints
stamp a running job's `updated_at` from it, and the sweeper compares against it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.jobs import (
    ACTIVE_STATUSES,
    Claim,
    ClaimRequest,
    CollectResult,
    EvaluateOptions,
    Heartbeat,
    HeartbeatReply,
    JobComplete,
    JobFail,
    JobPublic,
    MetricPoint,
    evaluate_result_model,
)
from service.catalog import Catalog
from service.catalog.jobs import DynamicsRow, JobRow, MetricPointRow
from service.catalog.tables import utcnow
from service.clock import Clock
from service.datasets import Datasets
from service.errors import ApiError, not_found, validated
from service.jobs.records import aware, held_job, job_public, job_row, lease_lost
from service.jobs.roster import WorkerRoster
from service.policies import Policies
from service.queue import Exhausted, JobQueue, Lease
from service.storage.artifacts import ArtifactStorage
from service.sweeps import Sweeps

log = logging.getLogger("replaybank.jobs")


LEASE_SWEEPER_LOCK = "lease-sweeper"


class WorkerProtocol:
    def __init__(
        self,
        catalog: Catalog,
        queue: JobQueue,
        datasets: Datasets,
        artifacts: ArtifactStorage,
        policies: Policies,
        sweeps: Sweeps,
        max_upload_bytes: int,
        roster: WorkerRoster,
    ) -> None:
        self.catalog = catalog
        self.queue = queue
        self.listening_since = queue.clock.now()
        """A worker can be heard only while the service is up: silence counts from here at the earliest."""
        self.datasets = datasets
        self.artifacts = artifacts
        self.policies = policies
        self.sweeps = sweeps
        self.max_upload_bytes = max_upload_bytes
        self.roster = roster

    @property
    def lease_seconds(self) -> float:
        return self.queue.lease_seconds

    @property
    def clock(self) -> Clock:
        return self.queue.clock

    # --- claim and the lease sweeper ----------------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> Claim | None:
        await self.roster.claiming(request)
        channels = ["cuda", "any"] if request.device == "cuda" else ["any"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait
        while True:
            item = await self.queue.claim(channels, max(0.0, deadline - loop.time()))
            if item is None:
                return None
            if isinstance(item, Exhausted):
                await self._give_up(item)
                continue
            row = await self.catalog.run(lambda session: _take(session, item, request.worker, self.clock.now()))
            if row is None:
                # cancelled or deleted while it waited in the queue
                await self.queue.remove(item.job_id)
                continue
            return Claim(job=job_public(row), lease=item.token, lease_seconds=self.lease_seconds)

    async def _give_up(self, exhausted: Exhausted) -> None:
        def mark(session: Session) -> None:
            row = session.get(JobRow, exhausted.job_id)
            if row is not None and row.status in ACTIVE_STATUSES:
                _fail_exhausted(row, exhausted.attempts, self.lease_seconds)

        await self.catalog.run(mark)

    async def sweep_silent_jobs(self) -> None:
        """Runs while the service does: every half lease on the clock, `requeue_silent_jobs`, unless another
        replica of the deployment is sweeping at that moment (one sweeps at a time)."""
        while True:
            await self.clock.sleep(self.lease_seconds / 2)
            try:
                await self.sweep_once()
            except Exception:  # the catalog or the queue is away for now; the next sweep tries again
                log.exception("could not sweep for jobs whose worker fell silent")

    async def sweep_once(self) -> bool:
        """`requeue_silent_jobs`, unless another replica is sweeping at this moment; whether this one swept."""
        async with self.datasets.locks.try_hold_async(LEASE_SWEEPER_LOCK) as held:
            if held:
                await self.requeue_silent_jobs()
        return held

    async def requeue_silent_jobs(self) -> None:
        """Running jobs not heard from for a whole lease: queued again for the next worker to claim, or
        failed once that was their last attempt. Without this a job whose worker died would show
        `running` until some other worker claimed. After a start, every running job gets a whole lease
        from `listening_since` to send its next heartbeat before it is judged."""
        lease_seconds, max_attempts = self.lease_seconds, self.queue.max_attempts

        def mark(session: Session) -> list[str]:
            now = self.clock.now()
            silent_since = now - timedelta(seconds=lease_seconds)
            exhausted = []
            for row in session.scalars(select(JobRow).where(JobRow.status == "running").with_for_update()):
                last_heard = aware(row.updated_at)
                if last_heard is None or max(last_heard, self.listening_since) >= silent_since:
                    continue
                if row.attempts >= max_attempts:
                    _fail_exhausted(row, row.attempts, lease_seconds)
                    exhausted.append(row.id)
                    continue
                row.error = (
                    f"attempt {row.attempts} of {max_attempts}: worker {row.worker} was last heard from at "
                    f"{last_heard:%Y-%m-%d %H:%M:%S} UTC and did not renew its {lease_seconds:g} s lease; "
                    f"waiting for the next worker"
                )
                row.status, row.lease, row.worker, row.updated_at = "queued", None, None, now
            return exhausted

        # The queue keeps the lapsed lease: the next claim takes it over as the job's next attempt.
        for job_id in await self.catalog.run(mark):
            await self.queue.remove(job_id)

    # --- while a job runs, and how it ends ----------------------------------------------------------------

    async def heartbeat(self, job_id: str, token: str, beat: Heartbeat) -> HeartbeatReply:
        row = await self.catalog.run(lambda session: held_job(session, job_id, token, allow_cancelled=True))
        if row.status == "cancelled":
            return HeartbeatReply(cancelled=True, lease_seconds=self.lease_seconds)
        if not await self.queue.renew(Lease(job_id, token, row.attempts)):
            raise lease_lost(job_id)

        def record(session: Session) -> bool:
            held = held_job(session, job_id, token, allow_cancelled=True)
            if held.status == "cancelled":
                return True
            now = self.clock.now()
            held.progress, held.step, held.updated_at = beat.progress, beat.step, now
            self.roster.heard(session, held.worker, beat)
            if beat.metrics:
                held.metrics = beat.metrics
            points = beat.history or ([MetricPoint(step=beat.step, values=beat.metrics)] if beat.metrics else [])
            session.add_all(
                MetricPointRow(job_id=job_id, step=point.step, time=point.time or now, values=point.values)
                for point in points
            )
            return False

        cancelled = await self.catalog.run(record)
        return HeartbeatReply(cancelled=cancelled, lease_seconds=self.lease_seconds)

    async def complete(self, job_id: str, token: str, done: JobComplete) -> JobPublic:
        def finish(session: Session) -> JobRow:
            row = held_job(session, job_id, token)
            result: dict[str, Any] = done.result
            if row.kind == "train" and row.policy_id is None:
                raise ApiError(409, "conflict", f"job {job_id} has no policy yet: POST it to /v1/jobs/{job_id}/policy first")
            if row.kind == "collect":
                result = validated(CollectResult, done.result, "result").model_dump(mode="json")
            if row.kind == "evaluate":
                method = EvaluateOptions.model_validate(row.options["evaluate"]).method
                evaluated = validated(evaluate_result_model(method), done.result, "result")
                result = evaluated.model_dump(mode="json")
                self.policies.record_evaluation(session, row, evaluated)
            now = utcnow()
            row.status, row.progress, row.result, row.lease = "succeeded", 1.0, result, None
            row.finished_at = row.updated_at = now
            if done.metrics:
                row.metrics = done.metrics
            return row

        row = await self.catalog.run(finish)
        await self.queue.remove(job_id)
        await asyncio.to_thread(self.artifacts.remove_checkpoint, job_id)
        await self.sweeps.job_completed(job_public(row))
        return job_public(row)

    async def fail(self, job_id: str, token: str, failure: JobFail) -> JobPublic:
        """The job failed, or with `retry` goes back to the queue with the reason while attempts are left."""
        if failure.retry:
            row = await self.catalog.run(lambda session: held_job(session, job_id, token))
            lease = Lease(job_id, token, row.attempts)
            if not self.queue.is_last(lease):
                return await self._retry(lease, failure.error)
            error = f"gave up after {lease.attempt} attempts: {failure.error}"
        else:
            error = failure.error

        def mark(session: Session) -> JobRow:
            row = held_job(session, job_id, token)
            now = utcnow()
            row.status, row.error, row.lease, row.finished_at, row.updated_at = "failed", error, None, now, now
            return row

        row = await self.catalog.run(mark)
        await self.queue.remove(job_id)
        return job_public(row)

    async def _retry(self, lease: Lease, reason: str) -> JobPublic:
        def requeue(session: Session) -> JobRow:
            held = held_job(session, lease.job_id, lease.token)
            held.error = f"attempt {lease.attempt} of {self.queue.max_attempts}: {reason}; waiting for another worker"
            held.status, held.lease, held.worker, held.updated_at = "queued", None, None, utcnow()
            held.attempts = lease.attempts_kept(count_attempt=True)
            return held

        # The row first, so a claim made the moment the queue lets go finds the job queued, not held. A lease
        # that lapsed meanwhile stays in the queue, and the next claim takes it over as the next attempt,
        # the same count.
        row = await self.catalog.run(requeue)
        await self.queue.release(lease, count_attempt=True)
        return job_public(row)

    async def release(self, job_id: str, token: str) -> JobPublic:
        row = await self.catalog.run(lambda session: held_job(session, job_id, token))
        lease = Lease(job_id, token, row.attempts)
        if not await self.queue.release(lease):
            raise lease_lost(job_id)

        def requeue(session: Session) -> JobRow:
            held = held_job(session, job_id, token)
            held.status, held.lease, held.worker, held.updated_at = "queued", None, None, utcnow()
            held.attempts = lease.attempts_kept(count_attempt=False)
            return held

        return job_public(await self.catalog.run(requeue))

    # --- checkpoints and dynamics models ------------------------------------------------------------------

    async def store_checkpoint(
        self, job_id: str, token: str, body: AsyncIterable[bytes], declared_size: str | None, step: int
    ) -> JobPublic:
        staged = await self.artifacts.receive(body, declared_size, self.max_upload_bytes)
        try:
            await self.catalog.run(lambda session: held_job(session, job_id, token))
            await asyncio.to_thread(self.artifacts.put_checkpoint, job_id, staged)
        finally:
            staged.unlink(missing_ok=True)

        def record(session: Session) -> JobRow:
            row = held_job(session, job_id, token)
            row.checkpoint_step, row.updated_at = step, self.clock.now()
            return row

        return job_public(await self.catalog.run(record))

    async def checkpoint(self, job_id: str) -> tuple[StoredFile, int]:
        row = await self.catalog.run(lambda session: job_row(session, job_id))
        stored = await asyncio.to_thread(self.artifacts.checkpoint, job_id)
        if stored is None or row.checkpoint_step is None:
            raise not_found(f"a checkpoint of job {job_id}")
        return stored, row.checkpoint_step

    async def store_dynamics(
        self, job_id: str, token: str, key: str, body: AsyncIterable[bytes], declared_size: str | None
    ) -> None:
        """Keep a COMBO dynamics model for the job's dataset version, under the dataset's id."""
        staged = await self.artifacts.receive(body, declared_size, self.max_upload_bytes)
        try:
            row = await self.catalog.run(lambda session: held_job(session, job_id, token))
            dataset = await asyncio.to_thread(self.datasets.get, row.dataset, "dataset")
            size = staged.stat().st_size
            await asyncio.to_thread(self.artifacts.put_dynamics, dataset.id, row.version, key, staged)
        finally:
            staged.unlink(missing_ok=True)

        def record(session: Session) -> None:
            session.merge(DynamicsRow(dataset=dataset.id, version=row.version, key=key, size=size, created_at=utcnow()))

        await self.catalog.run(record)

    async def dynamics(self, job_id: str, key: str) -> StoredFile:
        row = await self.catalog.run(lambda session: job_row(session, job_id))
        dataset = await asyncio.to_thread(self.datasets.get, row.dataset, "dataset")
        stored = await asyncio.to_thread(self.artifacts.dynamics, dataset.id, row.version, key)
        if stored is None:
            raise not_found(f"a dynamics model for {row.dataset}@{row.version} with key {key}")
        return stored

    # --- what appends ask ---------------------------------------------------------------------------------

    def collect_lease_allows_append(self, dataset: str, token: str) -> bool:
        """Whether `token` is the lease of a running collect job on `dataset` (a worker token may append then)."""
        with self.catalog.session() as session:
            found = session.scalar(
                select(JobRow.id).where(
                    JobRow.dataset == dataset,
                    JobRow.kind == "collect",
                    JobRow.status == "running",
                    JobRow.lease == token,
                )
            )
        return found is not None


def _take(session: Session, lease: Lease, worker: str, now: datetime) -> JobRow | None:
    """Mark a claimed job running under `lease` as of `now`; None when it was cancelled or deleted while queued."""
    row = session.get(JobRow, lease.job_id, with_for_update=True)
    if row is None or row.status not in ACTIVE_STATUSES:
        return None
    row.status, row.attempts, row.lease, row.worker, row.updated_at = "running", lease.attempt, lease.token, worker, now
    row.started_at = row.started_at or now
    row.error = None  # why the last attempt ended; this one starts clean
    return row


def _fail_exhausted(row: JobRow, attempts: int, lease_seconds: float) -> None:
    now = utcnow()
    row.status, row.lease, row.finished_at, row.updated_at = "failed", None, now, now
    row.error = (
        f"gave up after {attempts} attempts: each time the worker stopped renewing its lease "
        f"within {lease_seconds:g} s (it died, hung or lost the network)"
    )
