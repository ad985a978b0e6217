"""The policy registry: a finished train job's artifacts stored under a policy id, the card with the provenance
the registry knows, listing, files, deletion, and the evaluations that evaluate jobs add to the card."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from schemas.dataset import Page
from schemas.jobs import ACTIVE_STATUSES, EnvEvaluateResult, EvaluateOptions, EvaluateResult
from schemas.policies import PolicyCard, PolicyFormat, PolicyPublic
from service.catalog import Catalog
from service.catalog.jobs import JobRow, PolicyRow
from service.catalog.tables import utcnow
from service.errors import ApiError, not_found, validated
from service.jobs.records import aware, held_job, new_id, policy_row
from service.pages import page
from service.storage.artifacts import ArtifactStorage, InvalidArtifact
from service.storage.stores import StoredFile


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
        created_at=aware(row.created_at),  # type: ignore[arg-type]
    )


class Policies:
    def __init__(self, catalog: Catalog, artifacts: ArtifactStorage, max_upload_bytes: int) -> None:
        self.catalog = catalog
        self.artifacts = artifacts
        self.max_upload_bytes = max_upload_bytes

    async def store(self, job_id: str, token: str, body: AsyncIterable[bytes], declared_size: str | None) -> PolicyPublic:
        """A held train job's policy archive (a tar of the POLICY_FILES) becomes the job's policy."""
        staged = await self.artifacts.receive(body, declared_size, self.max_upload_bytes)
        try:
            row = await self.catalog.run(lambda session: held_job(session, job_id, token))
            if row.kind != "train":
                raise ApiError(409, "conflict", f"job {job_id} is a {row.kind} job; only train jobs make policies")
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        policy_id = row.policy_id or f"{row.algorithm}-{new_id()}"
        try:
            uploaded = await asyncio.to_thread(self.artifacts.put_policy, policy_id, staged, self.max_upload_bytes)
        except InvalidArtifact as error:
            raise ApiError(422, "invalid", str(error), "body") from error
        try:
            card = validated(PolicyCard, uploaded, "card")
            if card.algorithm != row.algorithm:
                raise ApiError(
                    422, "invalid", f"the card says {card.algorithm}; job {job_id} trains {row.algorithm}", "card.algorithm"
                )
        except ApiError:
            await asyncio.to_thread(self.artifacts.remove_policy, policy_id)
            raise
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
            held = held_job(session, job_id, token)
            policy = session.get(PolicyRow, policy_id)
            if policy is None:
                policy = PolicyRow(id=policy_id, created_at=utcnow())
                session.add(policy)
            policy.job_id, policy.algorithm, policy.dataset, policy.version = held.id, held.algorithm, held.dataset, held.version
            policy.parent_policy, policy.seed, policy.params = held.parent_policy, held.seed, held.params
            policy.card, policy.formats = full_card, formats
            held.policy_id, held.updated_at = policy_id, utcnow()
            return policy

        return policy_public(await self.catalog.run(record))

    def record_evaluation(self, session: Session, job: JobRow, evaluated: EvaluateResult) -> None:
        """Add an evaluate job's finding to its policy's card, in the session that finishes the job.

        Every evaluation is kept, each with what it was measured on (version, split) and how (method).
        """
        policy_id = EvaluateOptions.model_validate(job.options["evaluate"]).policy
        policy = session.get(PolicyRow, policy_id, with_for_update=True)
        if policy is None:
            raise ApiError(409, "conflict", f"policy {policy_id} was deleted while job {job.id} evaluated it")
        if isinstance(evaluated, EnvEvaluateResult):
            returns = evaluated.returns
            mean = sum(returns) / len(returns)
            std = (sum((value - mean) ** 2 for value in returns) / len(returns)) ** 0.5
            found = {
                "method": "env",
                "returns": returns,
                "lengths": evaluated.lengths,
                "mean": mean,
                "std": std,
                "episodes": len(returns),
            }
        else:
            found = evaluated.model_dump(mode="json")
        evaluation = found | {
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

    async def get(self, policy_id: str) -> PolicyPublic:
        return policy_public(await self.catalog.run(lambda session: policy_row(session, policy_id)))

    async def list(self, limit: int, cursor: str | None, dataset: str | None = None) -> Page[PolicyPublic]:
        """Newest first; the cursor is the id of the last policy shown."""

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
            newest_first = query.order_by(PolicyRow.created_at.desc(), PolicyRow.id.desc()).limit(limit + 1)
            rows = list(session.scalars(newest_first))
            return page(rows, limit, int(session.scalar(count) or 0), policy_public, lambda row: row.id)

        return await self.catalog.run(read)

    async def file(self, policy_id: str, format: PolicyFormat) -> StoredFile:
        await self.catalog.run(lambda session: policy_row(session, policy_id))
        stored = await asyncio.to_thread(self.artifacts.policy_file, policy_id, format)
        if stored is None:
            raise not_found(f"the {format} file of policy {policy_id}", "format")
        return stored

    async def delete(self, policy_id: str) -> None:
        def remove(session: Session) -> None:
            policy_row(session, policy_id)
            users = _active_job_using(session, policy_id)
            if users:
                raise ApiError(409, "conflict", f"policy {policy_id} is used by job {users[0]}, which is {users[1]}")
            session.execute(delete(PolicyRow).where(PolicyRow.id == policy_id))

        await self.catalog.run(remove)
        await asyncio.to_thread(self.artifacts.remove_policy, policy_id)


def _active_job_using(session: Session, policy_id: str) -> tuple[str, str] | None:
    """A queued or running job that fine-tunes, collects with or evaluates the policy, and its status."""
    rows = session.scalars(select(JobRow).where(JobRow.status.in_(ACTIVE_STATUSES)))
    for row in rows:
        used = {row.parent_policy, *(options.get("policy") for options in row.options.values())}
        if policy_id in used:
            return row.id, row.status
    return None
