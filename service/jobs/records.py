"""Job rows as the API shows them, and the lookups over one catalog session every part of the job side shares.

A worker proves it holds a job with the lease token it got at claim time: `held_job` checks that token
against the job's row, so a worker whose lease lapsed (another attempt took over) is told `lease_lost`.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from schemas.jobs import JobPublic
from service.catalog.jobs import JobRow, PolicyRow
from service.errors import ApiError, not_found


def new_id() -> str:
    """Sortable by creation time (milliseconds, then random bits), so lists page by id."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def aware(moment: datetime | None) -> datetime | None:
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
        split=row.options.get("split"),
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
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        updated_at=aware(row.updated_at),  # type: ignore[arg-type]
    )


def job_row(session: Session, job_id: str, lock: bool = False) -> JobRow:
    row = session.get(JobRow, job_id, with_for_update=lock)
    if row is None:
        raise not_found(f"job {job_id}")
    return row


def policy_row(session: Session, policy_id: str, field: str | None = None) -> PolicyRow:
    row = session.get(PolicyRow, policy_id)
    if row is None:
        raise not_found(f"policy {policy_id}", field)
    return row


def lease_lost(job_id: str) -> ApiError:
    return ApiError(
        409,
        "lease_lost",
        f"this worker no longer holds job {job_id}: its lease lapsed and another attempt took over, or the job ended",
    )


def held_job(session: Session, job_id: str, token: str, allow_cancelled: bool = False) -> JobRow:
    """The job's row, locked, if `token` is its current lease and it runs (or was just cancelled, when allowed)."""
    row = job_row(session, job_id, lock=True)
    if row.lease != token:
        raise lease_lost(job_id)
    if row.status == "cancelled" and not allow_cancelled:
        raise ApiError(409, "cancelled", f"job {job_id} was cancelled")
    if row.status not in ({"running", "cancelled"} if allow_cancelled else {"running"}):
        raise lease_lost(job_id)
    return row
