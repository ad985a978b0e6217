"""Sweeps: a grid of train jobs on one pinned version and split, each finished policy then estimated off-policy
(and run in the environment where the dataset has one), and the leaderboard over what they found.

Every job goes through `Jobs.submit`, so a sweep's jobs are ordinary jobs: workers claim, run and finish them
as any other. When a sweep's train job completes, `job_completed` submits its evaluations. That is idempotent:
a (sweep, train job, role) row is unique, and a duplicate evaluation (two callers racing) is cancelled again.
`catch_up` covers a train job that finished before the sweep had recorded it, or while the service went down
between completing a job and submitting its evaluations.

A sweep's status is not stored: it is read from its jobs' statuses (`_progress`), so a job that fails,
is cancelled or lapses needs no call here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from schemas.dataset import Page
from schemas.jobs import ACTIVE_STATUSES, EvaluateOptions, JobCreate, JobPublic
from schemas.sweeps import JobCounts, LeaderboardEntry, SweepCreate, SweepDetail, SweepPublic, SweepStatus
from service.catalog import Catalog
from service.catalog.jobs import JobRow, PolicyRow
from service.catalog.sweeps import SweepJobRow, SweepRow
from service.catalog.tables import DatasetRow, utcnow
from service.datasets import Datasets
from service.errors import ApiError, not_found
from service.jobs.records import aware, new_id
from service.jobs.submission import Jobs, check_offline_evaluation, check_training_split
from service.leaderboard import ranked
from service.pages import page

log = logging.getLogger("replaybank.sweeps")

TRAIN, OPE, ENV = "train", "ope", "env"


@dataclass
class _Progress:
    """What a sweep's jobs say about it: counts by role and status, ids, and evaluations still to submit."""

    train: JobCounts = field(default_factory=JobCounts)
    evaluations: JobCounts = field(default_factory=JobCounts)
    train_jobs: list[str] = field(default_factory=list)
    evaluate_jobs: list[str] = field(default_factory=list)
    awaiting_evaluation: int = 0
    unfinished: list[str] = field(default_factory=list)

    def status(self, row: SweepRow) -> SweepStatus:
        if row.cancelled_at is not None:
            return "cancelled"
        return "running" if self.unfinished or self.awaiting_evaluation else "finished"


class Sweeps:
    def __init__(self, catalog: Catalog, jobs: Jobs, datasets: Datasets) -> None:
        self.catalog = catalog
        self.jobs = jobs
        self.datasets = datasets

    # --- users --------------------------------------------------------------------------------------------

    async def submit(self, create: SweepCreate) -> SweepPublic:
        """Check everything the jobs will need, then submit every train job; a refusal writes nothing."""

        def pinned() -> tuple[DatasetRow, int]:
            row = self.datasets.get(create.dataset, field="dataset")
            return row, self.datasets.resolve(row, create.version).version

        dataset, version = await asyncio.to_thread(pinned)
        refusal = create.grid_refusal(env_evaluations=bool(dataset.spec.get("env_id")))
        if refusal is not None:
            raise ApiError(422, "invalid", refusal[1], refusal[0])
        await self.catalog.run(lambda session: _check_data(session, create, dataset, version))

        sweep_id = new_id()

        def insert(session: Session) -> None:
            spec = create.model_dump(mode="json")
            session.add(SweepRow(id=sweep_id, dataset=dataset.name, version=version, spec=spec, created_at=utcnow()))

        await self.catalog.run(insert)
        submitted: list[str] = []
        try:
            for point in create.grid():
                job = await self.jobs.submit(
                    JobCreate(
                        kind="train",
                        algorithm=point.algorithm,
                        dataset=dataset.name,
                        version=version,
                        steps=create.steps,
                        seed=point.seed,
                        params=point.params,
                        split=create.split,
                        device=create.device,
                    )
                )
                submitted.append(job.id)
                await self.catalog.run(_Membership(sweep_id, job.id, TRAIN, job.id, point.params).add_to)
        except BaseException:
            await self._withdraw(sweep_id, submitted)
            raise
        await self.catch_up(sweep_id)  # a worker may have finished a train job before its row here existed
        return (await self._publics([sweep_id]))[0]

    async def _withdraw(self, sweep_id: str, submitted: list[str]) -> None:
        """Undo a submission that failed part way: its jobs cancelled, the sweep and its rows gone."""
        for job_id in submitted:
            await self._cancel_job(job_id)

        def remove(session: Session) -> None:
            session.execute(delete(SweepJobRow).where(SweepJobRow.sweep_id == sweep_id))
            session.execute(delete(SweepRow).where(SweepRow.id == sweep_id))

        await self.catalog.run(remove)

    async def get(self, sweep_id: str) -> SweepDetail:
        public, entries = await self.catalog.run(lambda session: _detail(session, sweep_id))
        return SweepDetail(**public.model_dump(), leaderboard=ranked(entries))

    async def list(self, limit: int, cursor: str | None, dataset: str | None = None) -> Page[SweepPublic]:
        """Newest first; the cursor is the id of the last sweep shown (ids sort by creation time)."""

        def read(session: Session) -> Page[SweepPublic]:
            query = select(SweepRow)
            count = select(func.count()).select_from(SweepRow)
            if dataset is not None:
                query, count = query.where(SweepRow.dataset == dataset), count.where(SweepRow.dataset == dataset)
            if cursor:
                query = query.where(SweepRow.id < cursor)
            rows = list(session.scalars(query.order_by(SweepRow.id.desc()).limit(limit + 1)))
            progress = _progress(session, [row.id for row in rows[:limit]])
            return page(rows, limit, int(session.scalar(count) or 0), lambda row: _public(row, progress[row.id]), lambda row: row.id)

        return await self.catalog.run(read)

    async def cancel(self, sweep_id: str) -> SweepPublic:
        """Mark the sweep cancelled (so no evaluation follows) and cancel every job of it still unfinished."""

        def mark(session: Session) -> list[str]:
            row = _sweep_row(session, sweep_id, lock=True)
            progress = _progress(session, [sweep_id])[sweep_id]
            status = progress.status(row)
            if status != "running":
                raise ApiError(409, "conflict", f"sweep {sweep_id} already {status}")
            row.cancelled_at = utcnow()
            return progress.unfinished

        for job_id in await self.catalog.run(mark):
            await self._cancel_job(job_id)
        return (await self._publics([sweep_id]))[0]

    async def _publics(self, sweep_ids: list[str]) -> list[SweepPublic]:
        def read(session: Session) -> list[SweepPublic]:
            progress = _progress(session, sweep_ids)
            return [_public(_sweep_row(session, sweep_id), progress[sweep_id]) for sweep_id in sweep_ids]

        return await self.catalog.run(read)

    async def _cancel_job(self, job_id: str) -> None:
        try:
            await self.jobs.cancel(job_id)
        except ApiError as error:
            if error.status != 409:  # 409: it finished meanwhile, which is as good
                raise

    # --- when jobs finish ---------------------------------------------------------------------------------

    async def job_completed(self, job: JobPublic) -> None:
        """A job completed: if it trained a policy for a sweep, submit that policy's evaluations.

        Never raises: the job is done whatever happens here, and `catch_up` retries what failed."""
        if job.kind == "train" and job.status == "succeeded":
            await self._evaluate_or_log(job.id)

    async def catch_up(self, sweep_id: str | None = None) -> None:
        """Submit the evaluations every succeeded train job of a running sweep (or of `sweep_id`) still lacks.

        Never raises: what cannot be submitted now is logged and tried again at the next catch-up."""

        def waiting(session: Session) -> list[str]:
            evaluated = select(SweepJobRow.train_job_id).where(SweepJobRow.role == OPE)
            query = (
                select(SweepJobRow.job_id)
                .join(JobRow, JobRow.id == SweepJobRow.job_id)
                .join(SweepRow, SweepRow.id == SweepJobRow.sweep_id)
                .where(
                    SweepJobRow.role == TRAIN,
                    SweepJobRow.error.is_(None),
                    JobRow.status == "succeeded",
                    SweepRow.cancelled_at.is_(None),
                    SweepJobRow.job_id.not_in(evaluated),
                )
            )
            if sweep_id is not None:
                query = query.where(SweepJobRow.sweep_id == sweep_id)
            return list(session.scalars(query))

        try:
            waiting_jobs = await self.catalog.run(waiting)
        except Exception:  # the catalog is away for now
            log.exception("could not look for sweep policies awaiting their evaluations")
            return
        for train_job_id in waiting_jobs:
            await self._evaluate_or_log(train_job_id)

    async def _evaluate_or_log(self, train_job_id: str) -> None:
        try:
            await self._evaluate(train_job_id)
        except Exception:  # the catalog or the queue is away for now: caught up later
            log.exception("could not submit the evaluations of train job %s", train_job_id)

    async def _evaluate(self, train_job_id: str) -> None:
        """Submit what the train job's policy lacks of its sweep's evaluations: the environment evaluation first
        (where the dataset has an env_id and training did not measure a return already), then the estimate,
        so a recorded estimate means the policy's evaluations are all submitted."""
        plan = await self.catalog.run(lambda session: _evaluation_plan(session, train_job_id))
        if plan is None:
            return
        spec = plan.spec
        try:
            env_id = (await asyncio.to_thread(self.datasets.get, plan.dataset, "dataset")).spec.get("env_id")
        except ApiError as error:
            await self._record_error(train_job_id, error.message)
            return
        chosen: list[tuple[str, EvaluateOptions]] = []
        if ENV not in plan.submitted and env_id and not plan.measured_return:
            chosen.append((ENV, EvaluateOptions(policy=plan.policy_id, method="env", episodes=spec.eval_episodes)))
        if OPE not in plan.submitted:
            split = spec.split if spec.split.validation_fraction > 0 else None
            options = EvaluateOptions(
                policy=plan.policy_id, method=spec.method, split=split, steps=spec.ope_steps, discount=spec.discount
            )
            chosen.append((OPE, options))
        for role, options in chosen:
            evaluate = JobCreate(
                kind="evaluate", dataset=plan.dataset, version=plan.version, seed=plan.seed, device=spec.device, evaluate=options
            )
            try:
                job = await self.jobs.submit(evaluate)
            except ApiError as error:  # e.g. the dataset or the policy was deleted meanwhile
                await self._record_error(train_job_id, f"the {role} evaluation was refused: {error.message}")
                return
            if not await self._record_evaluation(plan.sweep_id, job.id, role, train_job_id):
                await self._cancel_job(job.id)

    async def _record_evaluation(self, sweep_id: str, job_id: str, role: str, train_job_id: str) -> bool:
        """Record the evaluation as the sweep's; False when another caller recorded one first, or the sweep was
        cancelled meanwhile (the job is then the caller's to cancel)."""

        def add(session: Session) -> bool:
            if _sweep_row(session, sweep_id, lock=True).cancelled_at is not None:
                return False
            _Membership(sweep_id, job_id, role, train_job_id, {}).add_to(session)
            return True

        try:
            return await self.catalog.run(add)
        except IntegrityError:
            return False

    async def _record_error(self, train_job_id: str, message: str) -> None:
        log.warning("train job %s: %s", train_job_id, message)

        def record(session: Session) -> None:
            row = session.scalar(select(SweepJobRow).where(SweepJobRow.job_id == train_job_id, SweepJobRow.role == TRAIN))
            if row is not None:
                row.error = message

        await self.catalog.run(record)


@dataclass(frozen=True)
class _Membership:
    """A job of the sweep, to record: `catalog.run(_Membership(...).add_to)`."""

    sweep_id: str
    job_id: str
    role: str
    train_job_id: str
    point: dict[str, Any]

    def add_to(self, session: Session) -> None:
        session.add(
            SweepJobRow(
                job_id=self.job_id,
                sweep_id=self.sweep_id,
                role=self.role,
                train_job_id=self.train_job_id,
                point=self.point,
                error=None,
            )
        )


def _sweep_row(session: Session, sweep_id: str, lock: bool = False) -> SweepRow:
    row = session.get(SweepRow, sweep_id, with_for_update=lock)
    if row is None:
        raise not_found(f"sweep {sweep_id}")
    return row


def _check_data(session: Session, create: SweepCreate, dataset: DatasetRow, version: int) -> None:
    """What each train job and each estimate will be refused for, refused now, naming the sweep's fields."""
    check_training_split(session, create.split, dataset, version)
    split = create.split if create.split.validation_fraction > 0 else None
    # any policy id: the spaces are the dataset's own, and the check reads only the method and the split
    probe = EvaluateOptions(policy="probe", method=create.method, split=split)
    try:
        check_offline_evaluation(session, probe, dataset, version)
    except ApiError as error:
        error.field = (error.field or "").removeprefix("evaluate.") or None
        raise


def _progress(session: Session, sweep_ids: list[str]) -> dict[str, _Progress]:
    """Each sweep's jobs by role and status, in one query."""
    found = {sweep_id: _Progress() for sweep_id in sweep_ids}
    if not sweep_ids:
        return found
    rows = session.execute(
        select(SweepJobRow.sweep_id, SweepJobRow.role, SweepJobRow.job_id, SweepJobRow.train_job_id, SweepJobRow.error, JobRow.status)
        .join(JobRow, JobRow.id == SweepJobRow.job_id)
        .where(SweepJobRow.sweep_id.in_(sweep_ids))
        .order_by(SweepJobRow.job_id)
    ).all()
    estimated: set[str] = set()
    trained: list[tuple[str, str]] = []  # (sweep, train job) of each succeeded train job whose evaluations may follow
    for sweep_id, role, job_id, train_job_id, error, status in rows:
        progress = found[sweep_id]
        counts = progress.train if role == TRAIN else progress.evaluations
        setattr(counts, status, getattr(counts, status) + 1)
        counts.total += 1
        (progress.train_jobs if role == TRAIN else progress.evaluate_jobs).append(job_id)
        if status in ACTIVE_STATUSES:
            progress.unfinished.append(job_id)
        if role == OPE:
            estimated.add(train_job_id)
        elif role == TRAIN and status == "succeeded" and error is None:
            trained.append((sweep_id, job_id))
    for sweep_id, job_id in trained:
        if job_id not in estimated:
            found[sweep_id].awaiting_evaluation += 1
    return found


def _public(row: SweepRow, progress: _Progress) -> SweepPublic:
    spec = SweepCreate.model_validate(row.spec)
    return SweepPublic(
        id=row.id,
        status=progress.status(row),
        dataset=row.dataset,
        version=row.version,
        requested_version=spec.version,
        **spec.model_dump(exclude={"dataset", "version"}),
        train=progress.train,
        evaluations=progress.evaluations,
        train_jobs=progress.train_jobs,
        evaluate_jobs=progress.evaluate_jobs,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        cancelled_at=aware(row.cancelled_at),
    )


def env_return(card: dict[str, Any]) -> float | None:
    """The mean return of the policy's latest evaluation in the environment (an env job's, or training's own)."""
    for entry in reversed(card.get("evaluations") or []):
        if entry.get("method", "env") == "env" and isinstance(entry.get("mean"), (int, float)):
            return float(entry["mean"])
    return None


@dataclass(frozen=True)
class _Plan:
    """What a trained policy's evaluations need, and which of them its sweep has already submitted."""

    sweep_id: str
    spec: SweepCreate
    dataset: str
    version: int
    seed: int
    policy_id: str
    measured_return: bool
    """Training measured the policy's return in the environment already (see `env_return`)."""
    submitted: frozenset[str]


def _evaluation_plan(session: Session, train_job_id: str) -> _Plan | None:
    """The plan for a succeeded train job of a running sweep; None when there is nothing to do."""
    link = session.scalar(select(SweepJobRow).where(SweepJobRow.job_id == train_job_id, SweepJobRow.role == TRAIN))
    if link is None or link.error is not None:
        return None
    sweep = session.get(SweepRow, link.sweep_id)
    job = session.get(JobRow, train_job_id)
    if sweep is None or sweep.cancelled_at is not None or job is None or job.status != "succeeded" or job.policy_id is None:
        return None
    policy = session.get(PolicyRow, job.policy_id)
    submitted = session.scalars(
        select(SweepJobRow.role).where(SweepJobRow.sweep_id == sweep.id, SweepJobRow.train_job_id == train_job_id)
    )
    return _Plan(
        sweep_id=sweep.id,
        spec=SweepCreate.model_validate(sweep.spec),
        dataset=sweep.dataset,
        version=sweep.version,
        seed=job.seed,
        policy_id=job.policy_id,
        measured_return=policy is not None and env_return(policy.card) is not None,
        submitted=frozenset(submitted),
    )


def _detail(session: Session, sweep_id: str) -> tuple[SweepPublic, list[LeaderboardEntry]]:
    """The sweep and one leaderboard entry per train job (unranked yet), from one session."""
    row = _sweep_row(session, sweep_id)
    public = _public(row, _progress(session, [sweep_id])[sweep_id])
    links = list(session.scalars(select(SweepJobRow).where(SweepJobRow.sweep_id == sweep_id).order_by(SweepJobRow.job_id)))
    jobs = {job.id: job for job in session.scalars(select(JobRow).where(JobRow.id.in_([link.job_id for link in links])))}
    ope = {link.train_job_id: jobs[link.job_id] for link in links if link.role == OPE}
    policy_ids = [job.policy_id for job in jobs.values() if job.policy_id is not None]
    cards = {policy: card for policy, card in session.execute(select(PolicyRow.id, PolicyRow.card).where(PolicyRow.id.in_(policy_ids)))}
    entries = []
    for link in links:
        if link.role != TRAIN:
            continue
        train, estimate = jobs[link.job_id], ope.get(link.job_id)
        result = estimate.result if estimate is not None and estimate.status == "succeeded" else {}
        card = cards.get(train.policy_id or "")
        error = link.error or (train.error if train.status == "failed" else None)
        if error is None and estimate is not None and estimate.status == "failed":
            error = f"the estimate failed: {estimate.error}"
        entries.append(
            LeaderboardEntry(
                rank=None,
                algorithm=train.algorithm or "",
                params=link.point,
                seed=train.seed,
                train_job=train.id,
                train_status=train.status,  # type: ignore[arg-type]
                policy_id=train.policy_id if train.status == "succeeded" else None,
                ope_job=estimate.id if estimate is not None else None,
                ope_status=estimate.status if estimate is not None else None,  # type: ignore[arg-type]
                estimate=result.get("estimate"),
                low=result.get("low"),
                high=result.get("high"),
                env_return=env_return(card) if card is not None else None,
                error=error,
            )
        )
    return public, entries
