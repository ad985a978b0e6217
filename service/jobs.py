"""Jobs: submission, the worker protocol (claim, heartbeat, checkpoint, policy, complete, fail, release),
cancellation, and the policy registry. The catalog holds each job's state; the queue only leases ids.

A worker proves it holds a job with the lease token it got at claim time. Every call about a job
checks that token against the job's row, and heartbeats also renew the lease in the queue, which
fails once the lease lapsed and another worker took the job over: the late worker is told so (409
`lease_lost`) and drops the job.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import anyio.from_thread
from pydantic import ValidationError
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from schemas.algorithms import ALGORITHM_PARAMS
from schemas.dataset import Page
from schemas.jobs import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Claim,
    ClaimRequest,
    CollectResult,
    EvaluateOptions,
    EvaluateResult,
    Heartbeat,
    HeartbeatReply,
    JobComplete,
    JobCreate,
    JobFail,
    JobPublic,
    MetricPoint,
)
from schemas.policies import PolicyCard, PolicyPublic
from schemas.transition import POLICY_SOURCE_PREFIX
from service.catalog import Catalog
from service.catalog.jobs import DynamicsRow, JobRow, MetricPointRow, PolicyRow
from service.catalog.tables import DatasetRow, TagRow, VersionRow, utcnow
from service.errors import ApiError, not_found
from service.services import Services
from service.queue import Exhausted, JobQueue, Lease
from service.storage.artifacts import ArtifactStorage, InvalidArtifact

MAX_HISTORY_PAGE = 10_000
T = TypeVar("T")
log = logging.getLogger("replaybank.jobs")


def new_id() -> str:
    """Sortable by creation time (milliseconds, then random bits), so lists page by id."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def job_public(row: JobRow) -> JobPublic:
    return JobPublic(
        id=row.id,
        kind=row.kind,  # type: ignore[arg-type]
        status=row.status,  # type: ignore[arg-type]
        algorithm=row.algorithm,
        dataset=row.dataset,
        version=row.version,
        requested_version=row.requested_version,
        steps=row.steps if row.kind == "train" else None,
        seed=row.seed,
        params=row.params,
        parent_policy=row.parent_policy,
        online_fraction=row.options.get("online_fraction"),
        device=row.device,  # type: ignore[arg-type]
        collect=row.options.get("collect"),
        evaluate=row.options.get("evaluate"),
        progress=row.progress,
        step=row.step,
        attempts=row.attempts,
        metrics=row.metrics,
        error=row.error,
        policy_id=row.policy_id,
        result=row.result,
        worker=row.worker,
        checkpoint_step=row.checkpoint_step,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
    )


def policy_public(row: PolicyRow) -> PolicyPublic:
    return PolicyPublic(
        id=row.id,
        job_id=row.job_id,
        algorithm=row.algorithm,
        dataset=row.dataset,
        version=row.version,
        parent_policy=row.parent_policy,
        seed=row.seed,
        params=row.params,
        formats=row.formats,  # type: ignore[arg-type]
        card=row.card,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
    )


class Jobs:
    def __init__(
        self,
        catalog: Catalog,
        queue: JobQueue,
        artifacts: ArtifactStorage,
        max_artifact_bytes: int,
    ) -> None:
        self.catalog = catalog
        self.queue = queue
        self.artifacts = artifacts
        self.max_artifact_bytes = max_artifact_bytes

    async def _db(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one catalog transaction, off the event loop."""

        def run() -> T:
            with self.catalog.session() as session:
                return work(session)

        return await asyncio.to_thread(run)

    # --- submission ---------------------------------------------------------------------------------------

    async def submit(self, create: JobCreate) -> JobPublic:
        def insert(session: Session) -> JobRow:
            dataset = _dataset(session, create.dataset)
            version = _resolve_version(session, dataset, create.version)
            spec_env = dataset.spec.get("env_id")
            options: dict[str, Any] = {}
            params = create.params
            if create.parent_policy is not None:
                parent = _policy(session, create.parent_policy, "parent_policy")
                if parent.algorithm != create.algorithm:
                    raise ApiError(
                        422,
                        "invalid",
                        f"parent policy {parent.id} was trained with {parent.algorithm}, not {create.algorithm}",
                        "parent_policy",
                    )
                if "state" not in parent.formats:
                    raise ApiError(422, "invalid", f"parent policy {parent.id} has no training state", "parent_policy")
                if parent.dataset != dataset.name:
                    raise ApiError(
                        422,
                        "invalid",
                        f"parent policy {parent.id} belongs to dataset {parent.dataset}, not {dataset.name}",
                        "parent_policy",
                    )
                # fine-tuning continues the parent's networks: what the job does not restate comes from the parent
                params = _validated_params(parent.algorithm, parent.params | create.given_params)
            if create.online_fraction is not None:
                _check_online_fraction(session, dataset, version, create.online_fraction)
                options["online_fraction"] = create.online_fraction
            for name, chosen in (("collect", create.collect), ("evaluate", create.evaluate)):
                if chosen is None:
                    continue
                _policy(session, chosen.policy, f"{name}.policy")
                if not spec_env:
                    raise ApiError(
                        422, "invalid", f"dataset {dataset.name} names no env_id to {name} in", f"{name}.policy"
                    )
                options[name] = chosen.model_dump(mode="json")
            now = utcnow()
            row = JobRow(
                id=new_id(),
                kind=create.kind,
                status="queued",
                algorithm=create.algorithm,
                dataset=dataset.name,
                version=version,
                requested_version=create.version,
                steps=create.steps or 0,  # the column predates optional steps: other kinds keep 0 there
                seed=create.seed,
                params=params,
                parent_policy=create.parent_policy,
                device=create.device,
                options=options,
                progress=0.0,
                step=0,
                attempts=0,
                metrics={},
                error=None,
                policy_id=None,
                result={},
                worker=None,
                lease=None,
                checkpoint_step=None,
                created_at=now,
                started_at=None,
                finished_at=None,
                updated_at=now,
            )
            session.add(row)
            return row

        row = await self._db(insert)
        await self.queue.enqueue(row.id, "cuda" if row.device == "cuda" else "any")
        return job_public(row)

    # --- reading ------------------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobPublic:
        return job_public(await self._db(lambda session: _job(session, job_id)))

    async def list(
        self, limit: int, cursor: str | None, status: str | None = None, dataset: str | None = None
    ) -> Page[JobPublic]:
        def read(session: Session) -> Page[JobPublic]:
            query = select(JobRow)
            count = select(func.count()).select_from(JobRow)
            for column, value in ((JobRow.status, status), (JobRow.dataset, dataset)):
                if value is not None:
                    query, count = query.where(column == value), count.where(column == value)
            if cursor:
                query = query.where(JobRow.id < cursor)
            rows = list(session.scalars(query.order_by(JobRow.id.desc()).limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            return Page[JobPublic](
                data=[job_public(row) for row in rows],
                count=int(session.scalar(count) or 0),
                next=rows[-1].id if more else None,
            )

        return await self._db(read)

    async def metrics(self, job_id: str, after_step: int | None, limit: int) -> list[MetricPoint]:
        def read(session: Session) -> list[MetricPoint]:
            _job(session, job_id)
            query = select(MetricPointRow).where(MetricPointRow.job_id == job_id)
            if after_step is not None:
                query = query.where(MetricPointRow.step > after_step)
            rows = session.scalars(query.order_by(MetricPointRow.step, MetricPointRow.id).limit(limit))
            return [MetricPoint(step=row.step, values=row.values, time=_aware(row.time)) for row in rows]

        return await self._db(read)

    # --- cancellation -------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobPublic:
        def mark(session: Session) -> JobRow:
            row = _job(session, job_id, lock=True)
            if row.status in FINISHED_STATUSES:
                raise ApiError(409, "conflict", f"job {job_id} already {row.status}")
            now = utcnow()
            # the lease stays recorded so the holder's next heartbeat hears "cancelled" rather than "lost"
            row.status, row.finished_at, row.updated_at = "cancelled", now, now
            return row

        row = await self._db(mark)
        await self.queue.remove(job_id)
        await asyncio.to_thread(self.artifacts.remove_checkpoint, job_id)
        return job_public(row)

    # --- the worker protocol ------------------------------------------------------------------------------

    async def claim(self, request: ClaimRequest, lease_seconds: float) -> Claim | None:
        channels = ["cuda", "any"] if request.device == "cuda" else ["any"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait
        while True:
            item = await self.queue.claim(channels, max(0.0, deadline - loop.time()))
            if item is None:
                return None
            if isinstance(item, Exhausted):
                await self._give_up(item, lease_seconds)
                continue
            row = await self._db(lambda session: _take(session, item, request.worker))
            if row is None:
                # cancelled or deleted while it waited in the queue
                await self.queue.remove(item.job_id)
                continue
            return Claim(job=job_public(row), lease=item.token, lease_seconds=lease_seconds)

    async def _give_up(self, exhausted: Exhausted, lease_seconds: float) -> None:
        def mark(session: Session) -> None:
            row = session.get(JobRow, exhausted.job_id)
            if row is not None and row.status in ACTIVE_STATUSES:
                _fail_exhausted(row, exhausted.attempts, lease_seconds)

        await self._db(mark)

    async def sweep_silent_jobs(self) -> None:
        """Runs while the service does: every half lease, `requeue_silent_jobs`."""
        # A worker can be heard only while the service is up: after a start, every running job gets a
        # whole lease to send its next heartbeat before it is judged.
        await asyncio.sleep(self.queue.lease_seconds)
        while True:
            try:
                await self.requeue_silent_jobs()
            except Exception:  # the catalog or the queue is away for now; the next sweep tries again
                log.exception("could not sweep for jobs whose worker fell silent")
            await asyncio.sleep(self.queue.lease_seconds / 2)

    async def requeue_silent_jobs(self) -> None:
        """Running jobs not heard from for a whole lease: queued again for the next worker to claim, or
        failed once that was their last attempt. Without this a job whose worker died would show
        `running` until some other worker claimed."""
        lease_seconds, max_attempts = self.queue.lease_seconds, self.queue.max_attempts

        def mark(session: Session) -> list[str]:
            now = utcnow()
            silent_since = now - timedelta(seconds=lease_seconds)
            exhausted = []
            for row in session.scalars(select(JobRow).where(JobRow.status == "running").with_for_update()):
                last_heard = _aware(row.updated_at)
                if last_heard is None or last_heard >= silent_since:
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
        for job_id in await self._db(mark):
            await self.queue.remove(job_id)

    async def heartbeat(self, job_id: str, token: str, beat: Heartbeat, lease_seconds: float) -> HeartbeatReply:
        row = await self._db(lambda session: _held(session, job_id, token, allow_cancelled=True))
        if row.status == "cancelled":
            return HeartbeatReply(cancelled=True, lease_seconds=lease_seconds)
        if not await self.queue.renew(Lease(job_id, token, row.attempts)):
            raise _lease_lost(job_id)

        def record(session: Session) -> bool:
            held = _held(session, job_id, token, allow_cancelled=True)
            if held.status == "cancelled":
                return True
            now = utcnow()
            held.progress, held.step, held.updated_at = beat.progress, beat.step, now
            if beat.metrics:
                held.metrics = beat.metrics
            points = beat.history or ([MetricPoint(step=beat.step, values=beat.metrics)] if beat.metrics else [])
            session.add_all(
                MetricPointRow(job_id=job_id, step=point.step, time=point.time or now, values=point.values)
                for point in points
            )
            return False

        cancelled = await self._db(record)
        return HeartbeatReply(cancelled=cancelled, lease_seconds=lease_seconds)

    async def complete(self, job_id: str, token: str, done: JobComplete) -> JobPublic:
        def finish(session: Session) -> JobRow:
            row = _held(session, job_id, token)
            result: dict[str, Any] = done.result
            try:
                if row.kind == "train" and row.policy_id is None:
                    raise ApiError(409, "conflict", f"job {job_id} has no policy yet: POST it to /v1/jobs/{job_id}/policy first")
                if row.kind == "collect":
                    result = CollectResult.model_validate(done.result).model_dump(mode="json")
                if row.kind == "evaluate":
                    evaluated = EvaluateResult.model_validate(done.result)
                    result = evaluated.model_dump(mode="json")
                    self._record_evaluation(session, row, evaluated)
            except ValidationError as error:
                first = error.errors()[0]
                field = ".".join(["result", *(str(part) for part in first["loc"])])
                raise ApiError(422, "invalid", f"{field}: {first['msg']}", field) from error
            now = utcnow()
            row.status, row.progress, row.result, row.lease = "succeeded", 1.0, result, None
            row.finished_at = row.updated_at = now
            if done.metrics:
                row.metrics = done.metrics
            return row

        row = await self._db(finish)
        await self.queue.remove(job_id)
        await asyncio.to_thread(self.artifacts.remove_checkpoint, job_id)
        return job_public(row)

    def _record_evaluation(self, session: Session, job: JobRow, evaluated: EvaluateResult) -> None:
        policy_id = EvaluateOptions.model_validate(job.options["evaluate"]).policy
        policy = session.get(PolicyRow, policy_id, with_for_update=True)
        if policy is None:
            raise ApiError(409, "conflict", f"policy {policy_id} was deleted while job {job.id} evaluated it")
        returns = evaluated.returns
        mean = sum(returns) / len(returns)
        std = (sum((value - mean) ** 2 for value in returns) / len(returns)) ** 0.5
        evaluation = {
            "returns": returns,
            "lengths": evaluated.lengths,
            "mean": mean,
            "std": std,
            "episodes": len(returns),
            "job_id": job.id,
            "seed": job.seed,
            "dataset": job.dataset,
            "version": job.version,
            "time": utcnow().isoformat(),
        }
        card = dict(policy.card)
        card["evaluations"] = [*card.get("evaluations", []), evaluation]
        policy.card = card
        self.artifacts.write_card(policy.id, card)

    async def fail(self, job_id: str, token: str, failure: JobFail) -> JobPublic:
        def mark(session: Session) -> JobRow:
            row = _held(session, job_id, token)
            now = utcnow()
            row.status, row.error, row.lease, row.finished_at, row.updated_at = "failed", failure.error, None, now, now
            return row

        row = await self._db(mark)
        await self.queue.remove(job_id)
        return job_public(row)

    async def release(self, job_id: str, token: str) -> JobPublic:
        row = await self._db(lambda session: _held(session, job_id, token))
        if not await self.queue.release(Lease(job_id, token, row.attempts)):
            raise _lease_lost(job_id)

        def requeue(session: Session) -> JobRow:
            held = _held(session, job_id, token)
            held.status, held.lease, held.worker, held.updated_at = "queued", None, None, utcnow()
            # a released attempt does not count against the bound
            held.attempts = max(0, held.attempts - 1)
            return held

        return job_public(await self._db(requeue))

    # --- checkpoints, policies and dynamics ---------------------------------------------------------------

    async def store_checkpoint(self, job_id: str, token: str, staged: Path, step: int) -> JobPublic:
        try:
            await self._db(lambda session: _held(session, job_id, token))
            await asyncio.to_thread(self.artifacts.put_checkpoint, job_id, staged)
        finally:
            staged.unlink(missing_ok=True)

        def record(session: Session) -> JobRow:
            row = _held(session, job_id, token)
            row.checkpoint_step, row.updated_at = step, utcnow()
            return row

        return job_public(await self._db(record))

    async def checkpoint(self, job_id: str) -> tuple[Path, int]:
        row = await self._db(lambda session: _job(session, job_id))
        path = self.artifacts.checkpoint(job_id)
        if path is None or row.checkpoint_step is None:
            raise not_found(f"a checkpoint of job {job_id}")
        return path, row.checkpoint_step

    async def store_policy(self, job_id: str, token: str, staged: Path) -> PolicyPublic:
        row = await self._db(lambda session: _held(session, job_id, token))
        if row.kind != "train":
            staged.unlink(missing_ok=True)
            raise ApiError(409, "conflict", f"job {job_id} is a {row.kind} job; only train jobs make policies")
        policy_id = row.policy_id or f"{row.algorithm}-{new_id()}"
        try:
            uploaded = await asyncio.to_thread(self.artifacts.put_policy, policy_id, staged, self.max_artifact_bytes)
            card = PolicyCard.model_validate(uploaded)
        except InvalidArtifact as error:
            raise ApiError(422, "invalid", str(error), "body") from error
        except ValidationError as error:
            await asyncio.to_thread(self.artifacts.remove_policy, policy_id)
            first = error.errors()[0]
            field = ".".join(["card", *(str(part) for part in first["loc"])])
            raise ApiError(422, "invalid", f"{field}: {first['msg']}", field) from error
        if card.algorithm != row.algorithm:
            await asyncio.to_thread(self.artifacts.remove_policy, policy_id)
            raise ApiError(422, "invalid", f"the card says {card.algorithm}; job {job_id} trains {row.algorithm}", "card.algorithm")
        # the registry knows the provenance better than the worker does
        full_card = uploaded | {
            "policy_id": policy_id,
            "job_id": row.id,
            "dataset": row.dataset,
            "version": row.version,
            "seed": row.seed,
            "parent_policy": row.parent_policy,
            "params": row.params,
            "evaluations": uploaded.get("evaluations", []),
        }
        await asyncio.to_thread(self.artifacts.write_card, policy_id, full_card)
        formats = self.artifacts.policy_formats(policy_id)

        def record(session: Session) -> PolicyRow:
            held = _held(session, job_id, token)
            policy = session.get(PolicyRow, policy_id)
            if policy is None:
                policy = PolicyRow(id=policy_id, created_at=utcnow())
                session.add(policy)
            policy.job_id, policy.algorithm, policy.dataset, policy.version = held.id, held.algorithm, held.dataset, held.version
            policy.parent_policy, policy.seed, policy.params = held.parent_policy, held.seed, held.params
            policy.card, policy.formats = full_card, formats
            held.policy_id, held.updated_at = policy_id, utcnow()
            return policy

        return policy_public(await self._db(record))

    async def store_dynamics(self, job_id: str, token: str, key: str, staged: Path) -> None:
        try:
            row = await self._db(lambda session: _held(session, job_id, token))
            dataset = await self._db(lambda session: _dataset(session, row.dataset))
            size = staged.stat().st_size
            await asyncio.to_thread(self.artifacts.put_dynamics, dataset.id, row.version, key, staged)
        finally:
            staged.unlink(missing_ok=True)

        def record(session: Session) -> None:
            session.merge(DynamicsRow(dataset=dataset.id, version=row.version, key=key, size=size, created_at=utcnow()))

        await self._db(record)

    async def dynamics(self, job_id: str, key: str) -> Path:
        row = await self._db(lambda session: _job(session, job_id))
        dataset = await self._db(lambda session: _dataset(session, row.dataset))
        path = self.artifacts.dynamics(dataset.id, row.version, key)
        if path is None:
            raise not_found(f"a dynamics model for {row.dataset}@{row.version} with key {key}")
        return path

    # --- policies -----------------------------------------------------------------------------------------

    async def policy(self, policy_id: str) -> PolicyPublic:
        return policy_public(await self._db(lambda session: _policy(session, policy_id)))

    async def policies(self, limit: int, cursor: str | None, dataset: str | None = None) -> Page[PolicyPublic]:
        def read(session: Session) -> Page[PolicyPublic]:
            query = select(PolicyRow)
            count = select(func.count()).select_from(PolicyRow)
            if dataset is not None:
                query, count = query.where(PolicyRow.dataset == dataset), count.where(PolicyRow.dataset == dataset)
            if cursor:
                after = session.get(PolicyRow, cursor)
                if after is None:
                    raise not_found(f"the cursor's policy {cursor!r}", "cursor")
                query = query.where(
                    or_(
                        PolicyRow.created_at < after.created_at,
                        and_(PolicyRow.created_at == after.created_at, PolicyRow.id < after.id),
                    )
                )
            rows = list(session.scalars(query.order_by(PolicyRow.created_at.desc(), PolicyRow.id.desc()).limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            return Page[PolicyPublic](
                data=[policy_public(row) for row in rows],
                count=int(session.scalar(count) or 0),
                next=rows[-1].id if more else None,
            )

        return await self._db(read)

    async def policy_file(self, policy_id: str, format: str) -> Path:
        await self._db(lambda session: _policy(session, policy_id))
        path = self.artifacts.policy_file(policy_id, format)
        if path is None:
            raise not_found(f"the {format} file of policy {policy_id}", "format")
        return path

    async def delete_policy(self, policy_id: str) -> None:
        def remove(session: Session) -> None:
            _policy(session, policy_id)
            users = _active_jobs_using_policy(session, policy_id)
            if users:
                raise ApiError(409, "conflict", f"policy {policy_id} is used by job {users[0]}, which is {users[1]}")
            session.execute(delete(PolicyRow).where(PolicyRow.id == policy_id))

        await self._db(remove)
        await asyncio.to_thread(self.artifacts.remove_policy, policy_id)

    # --- what the data side asks --------------------------------------------------------------------------

    def refuse_dataset_delete(self, dataset: str) -> None:
        """Deleting a dataset a queued or running job uses is refused (409): the job would lose its data."""
        with self.catalog.session() as session:
            row = session.scalars(
                select(JobRow).where(JobRow.dataset == dataset, JobRow.status.in_(ACTIVE_STATUSES)).limit(1)
            ).first()
        if row is not None:
            raise ApiError(
                409, "conflict", f"dataset {dataset} is used by job {row.id}, which is {row.status}; cancel it first", "name"
            )

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


# --- helpers over one session -------------------------------------------------------------------------


def _dataset(session: Session, name: str) -> DatasetRow:
    row = session.scalar(select(DatasetRow).where(DatasetRow.name == name))
    if row is None:
        raise not_found(f"dataset {name}", "dataset")
    return row


def _check_online_fraction(session: Session, dataset: DatasetRow, version: int, fraction: float) -> None:
    """A batch share asked of rows the version has none of can never be drawn: refuse it now."""
    stats = session.get(VersionRow, (dataset.id, version)).stats
    sources: dict[str, int] = stats.get("sources", {})
    online = sum(count for source, count in sources.items() if source.startswith(POLICY_SOURCE_PREFIX))
    offline = sum(sources.values()) - online
    for share, rows, what in ((fraction, online, "collected by a policy"), (1.0 - fraction, offline, "logged")):
        if share > 0 and rows == 0:
            raise ApiError(
                422,
                "invalid",
                f"online_fraction {fraction:g} asks for rows {what}, and {dataset.name} version {version} has none "
                f"(its rows by source: {sources or 'none'})",
                "online_fraction",
            )


def _resolve_version(session: Session, dataset: DatasetRow, version: int | str) -> int:
    if version == "latest":
        return dataset.latest_version
    if isinstance(version, int):
        if session.get(VersionRow, (dataset.id, version)) is None:
            raise ApiError(
                404, "not_found", f"dataset {dataset.name} has no version {version} (latest is {dataset.latest_version})", "version"
            )
        return version
    if version.isdigit():
        return _resolve_version(session, dataset, int(version))
    tag = session.get(TagRow, (dataset.id, version))
    if tag is None:
        raise ApiError(404, "not_found", f"dataset {dataset.name} has no tag {version!r}", "version")
    return tag.version


def _validated_params(algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return ALGORITHM_PARAMS[algorithm].model_validate(params).model_dump(mode="json")
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(["params", *(str(part) for part in first["loc"])])
        raise ApiError(422, "invalid", f"{field}: {first['msg']}", field) from error


def _job(session: Session, job_id: str, lock: bool = False) -> JobRow:
    row = session.get(JobRow, job_id, with_for_update=lock)
    if row is None:
        raise not_found(f"job {job_id}")
    return row


def _policy(session: Session, policy_id: str, field: str | None = None) -> PolicyRow:
    row = session.get(PolicyRow, policy_id)
    if row is None:
        raise not_found(f"policy {policy_id}", field)
    return row


def _lease_lost(job_id: str) -> ApiError:
    return ApiError(
        409,
        "lease_lost",
        f"this worker no longer holds job {job_id}: its lease lapsed and another attempt took over, or the job ended",
    )


def _held(session: Session, job_id: str, token: str, allow_cancelled: bool = False) -> JobRow:
    row = _job(session, job_id, lock=True)
    if row.lease != token:
        raise _lease_lost(job_id)
    if row.status == "cancelled" and not allow_cancelled:
        raise ApiError(409, "cancelled", f"job {job_id} was cancelled")
    if row.status not in ({"running", "cancelled"} if allow_cancelled else {"running"}):
        raise _lease_lost(job_id)
    return row


def _take(session: Session, lease: Lease, worker: str) -> JobRow | None:
    row = session.get(JobRow, lease.job_id, with_for_update=True)
    if row is None or row.status not in ACTIVE_STATUSES:
        return None
    now = utcnow()
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


def _active_jobs_using_policy(session: Session, policy_id: str) -> tuple[str, str] | None:
    rows = session.scalars(select(JobRow).where(JobRow.status.in_(ACTIVE_STATUSES)))
    for row in rows:
        used = {row.parent_policy, *(options.get("policy") for options in row.options.values())}
        if policy_id in used:
            return row.id, row.status
    return None


def open_jobs(services: Services) -> Jobs:
    """The job side over the open data side: its tables created if missing, the queue the settings ask
    for, and its hooks registered (dataset deletion guard, readiness of the queue, the append permit)."""
    from service.catalog.jobs import JOB_TABLES
    from service.queue import create_queue

    settings = services.settings
    catalog = services.catalog
    JobRow.metadata.create_all(catalog.engine, tables=JOB_TABLES)
    queue = create_queue(settings.redis_url, catalog.engine, settings.lease_seconds, settings.max_attempts)
    jobs = Jobs(catalog, queue, ArtifactStorage(settings.data_dir), settings.max_upload_bytes)
    services.extensions["jobs"] = jobs
    services.dataset_delete_guards.append(jobs.refuse_dataset_delete)
    # /readyz runs in a worker thread of the event loop; the queue's ping is a coroutine of that loop
    services.readiness_checks["queue"] = lambda: anyio.from_thread.run(queue.ping)
    return jobs
