"""Jobs as users see them: submit (pinning the concrete dataset version), show, list, metric history, cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schemas.algorithms import ALGORITHM_PARAMS
from schemas.dataset import Page
from schemas.jobs import FINISHED_STATUSES, EvaluateOptions, JobCreate, JobPublic, MetricPoint
from schemas.splits import Split, held_out
from schemas.transition import POLICY_SOURCE_PREFIX
from service.catalog import Catalog
from service.catalog.jobs import JobRow, MetricPointRow, PolicyRow
from service.catalog.tables import DatasetRow, EpisodeRow, VersionRow, utcnow
from service.datasets import Datasets
from service.errors import ApiError, validated
from service.jobs.records import aware, job_public, job_row, new_id, policy_row
from service.pages import page
from service.queue import JobQueue
from service.storage.artifacts import ArtifactStorage


class Jobs:
    def __init__(self, catalog: Catalog, queue: JobQueue, datasets: Datasets, artifacts: ArtifactStorage) -> None:
        self.catalog = catalog
        self.queue = queue
        self.datasets = datasets
        self.artifacts = artifacts

    async def submit(self, create: JobCreate) -> JobPublic:
        def pinned() -> tuple[DatasetRow, VersionRow]:
            row = self.datasets.get(create.dataset, field="dataset")
            return row, self.datasets.resolve(row, create.version)

        dataset_row, version = await asyncio.to_thread(pinned)
        dataset, spec_env = dataset_row.name, dataset_row.spec.get("env_id")

        def insert(session: Session) -> JobRow:
            options: dict[str, Any] = {}
            params = create.params
            if create.parent_policy is not None:
                parent = policy_row(session, create.parent_policy, "parent_policy")
                if parent.algorithm != create.algorithm:
                    raise ApiError(
                        422,
                        "invalid",
                        f"parent policy {parent.id} was trained with {parent.algorithm}, not {create.algorithm}",
                        "parent_policy",
                    )
                if "state" not in parent.formats:
                    raise ApiError(422, "invalid", f"parent policy {parent.id} has no training state", "parent_policy")
                if parent.dataset != dataset:
                    raise ApiError(
                        422,
                        "invalid",
                        f"parent policy {parent.id} belongs to dataset {parent.dataset}, not {dataset}",
                        "parent_policy",
                    )
                # fine-tuning continues the parent's networks: what the job does not restate comes from the parent
                merged = parent.params | create.given_params
                params = validated(ALGORITHM_PARAMS[parent.algorithm], merged, "params").model_dump(mode="json")
            if create.online_fraction is not None:
                _check_online_fraction(dataset, version, create.online_fraction)
                options["online_fraction"] = create.online_fraction
            if create.split is not None:
                check_training_split(session, create.split, dataset_row, version.version)
                options["split"] = create.split.model_dump(mode="json")
            for name, chosen in (("collect", create.collect), ("evaluate", create.evaluate)):
                if chosen is None:
                    continue
                policy = policy_row(session, chosen.policy, f"{name}.policy")
                offline = isinstance(chosen, EvaluateOptions) and chosen.method != "env"
                if not spec_env and not offline:
                    raise ApiError(422, "invalid", f"dataset {dataset} names no env_id to {name} in", f"{name}.policy")
                if isinstance(chosen, EvaluateOptions):
                    _check_spaces(policy, dataset_row)
                    if offline:
                        check_offline_evaluation(session, chosen, dataset_row, version.version)
                options[name] = chosen.model_dump(mode="json")
            now = utcnow()
            row = JobRow(
                id=new_id(),
                kind=create.kind,
                status="queued",
                algorithm=create.algorithm,
                dataset=dataset,
                version=version.version,
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

        row = await self.catalog.run(insert)
        await self.queue.enqueue(row.id, "cuda" if row.device == "cuda" else "any")
        return job_public(row)

    async def get(self, job_id: str) -> JobPublic:
        return job_public(await self.catalog.run(lambda session: job_row(session, job_id)))

    async def list(
        self, limit: int, cursor: str | None, status: str | None = None, dataset: str | None = None
    ) -> Page[JobPublic]:
        """Newest first; the cursor is the id of the last job shown (ids sort by creation time)."""

        def read(session: Session) -> Page[JobPublic]:
            query = select(JobRow)
            count = select(func.count()).select_from(JobRow)
            for column, value in ((JobRow.status, status), (JobRow.dataset, dataset)):
                if value is not None:
                    query, count = query.where(column == value), count.where(column == value)
            if cursor:
                query = query.where(JobRow.id < cursor)
            rows = list(session.scalars(query.order_by(JobRow.id.desc()).limit(limit + 1)))
            return page(rows, limit, int(session.scalar(count) or 0), job_public, lambda row: row.id)

        return await self.catalog.run(read)

    async def metrics(self, job_id: str, after_step: int | None, limit: int) -> list[MetricPoint]:
        def read(session: Session) -> list[MetricPoint]:
            job_row(session, job_id)
            query = select(MetricPointRow).where(MetricPointRow.job_id == job_id)
            if after_step is not None:
                query = query.where(MetricPointRow.step > after_step)
            rows = session.scalars(query.order_by(MetricPointRow.step, MetricPointRow.id).limit(limit))
            return [MetricPoint(step=row.step, values=row.values, time=aware(row.time)) for row in rows]

        return await self.catalog.run(read)

    async def cancel(self, job_id: str) -> JobPublic:
        def mark(session: Session) -> JobRow:
            row = job_row(session, job_id, lock=True)
            if row.status in FINISHED_STATUSES:
                raise ApiError(409, "conflict", f"job {job_id} already {row.status}")
            now = utcnow()
            # the lease stays recorded so the holder's next heartbeat hears "cancelled" rather than "lost"
            row.status, row.finished_at, row.updated_at = "cancelled", now, now
            return row

        row = await self.catalog.run(mark)
        await self.queue.remove(job_id)
        await asyncio.to_thread(self.artifacts.remove_checkpoint, job_id)
        return job_public(row)


def _check_online_fraction(dataset: str, version: VersionRow, fraction: float) -> None:
    """A batch share asked of rows the version has none of can never be drawn: refuse it now."""
    sources: dict[str, int] = version.stats.get("sources", {})
    online = sum(count for source, count in sources.items() if source.startswith(POLICY_SOURCE_PREFIX))
    offline = sum(sources.values()) - online
    for share, rows, what in ((fraction, online, "collected by a policy"), (1.0 - fraction, offline, "logged")):
        if share > 0 and rows == 0:
            raise ApiError(
                422,
                "invalid",
                f"online_fraction {fraction:g} asks for rows {what}, and {dataset} version {version.version} has none "
                f"(its rows by source: {sources or 'none'})",
                "online_fraction",
            )


def check_training_split(session: Session, split: Split, dataset: DatasetRow, version: int) -> None:
    """Held-out episodes are worth measuring only when some are held out and some are left to train on.

    The catalog tracks episodes as of the latest version; ones still open then, or ended by `version`,
    stand in for the version's own (an episode begun after `version` can only make the check kinder)."""
    episodes = np.asarray(
        session.scalars(
            select(EpisodeRow.episode_id).where(
                EpisodeRow.dataset_id == dataset.id, (EpisodeRow.ended_in.is_(None)) | (EpisodeRow.ended_in <= version)
            )
        ).all(),
        dtype=np.int64,
    )
    out = held_out(episodes, split)
    where = f"the split (validation_fraction={split.validation_fraction}, seed={split.seed})"
    if split.validation_fraction > 0 and not out.any():
        raise ApiError(
            422, "invalid", f"{where} holds out none of the {len(episodes)} episodes of {dataset.name} version {version}", "split"
        )
    if out.all():
        raise ApiError(
            422, "invalid", f"{where} holds out all {len(episodes)} episodes of {dataset.name} version {version}", "split"
        )


def _check_spaces(policy: PolicyRow, dataset: DatasetRow) -> None:
    """A policy acts on the observations and in the action space its card names: the dataset's must be those."""
    card, spec = policy.card, dataset.spec
    observation, action = card.get("observation"), card.get("action")
    if observation is not None and list(observation.get("shape", [])) != list(spec["observation"]["shape"]):
        raise ApiError(
            422,
            "invalid",
            f"policy {policy.id} takes observations of shape {observation.get('shape')}; "
            f"dataset {dataset.name}'s are {spec['observation']['shape']}",
            "evaluate.policy",
        )
    if action is not None and _action_space(action) != _action_space(spec["action"]):
        raise ApiError(
            422,
            "invalid",
            f"policy {policy.id} acts in {_action_space(action)}; dataset {dataset.name}'s actions are "
            f"{_action_space(spec['action'])}",
            "evaluate.policy",
        )


def _action_space(action: dict[str, Any]) -> str:
    if action.get("kind") == "discrete":
        return f"discrete actions 0..{action.get('n', 0) - 1}"
    return f"continuous actions of shape {list(action.get('shape', []))}"


def check_offline_evaluation(session: Session, chosen: EvaluateOptions, dataset: DatasetRow, version: int) -> None:
    """An estimate starts from complete episodes' initial states: the version (and split) must hold one."""
    if chosen.method == "model" and dataset.spec["action"].get("kind") == "discrete":
        raise ApiError(
            422, "invalid", f"a model-based estimate needs continuous actions; {dataset.name}'s are discrete", "evaluate.method"
        )
    ended = session.scalars(
        select(EpisodeRow.episode_id).where(
            EpisodeRow.dataset_id == dataset.id, EpisodeRow.ended_in.is_not(None), EpisodeRow.ended_in <= version
        )
    ).all()
    if not ended:
        raise ApiError(
            422,
            "invalid",
            f"{dataset.name} version {version} holds no complete episode (none has ended by then) to estimate a return from",
            "version",
        )
    split = chosen.split
    if split is not None and not held_out(np.asarray(ended, dtype=np.int64), split).any():
        raise ApiError(
            422,
            "invalid",
            f"the split (validation_fraction={split.validation_fraction}, seed={split.seed}) holds out none of the "
            f"{len(ended)} complete episodes of {dataset.name} version {version}",
            "evaluate.split",
        )
