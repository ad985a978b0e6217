"""The catalog's record of workers: one row per worker name, written on each claim and heartbeat.

Both writes are upserts (`INSERT ... ON CONFLICT DO UPDATE`, which SQLite and PostgreSQL share), so two
services hearing one new worker at once never collide on its name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.catalog.jobs import JobRow
from service.catalog.tables import Base


class WorkerRow(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    device: Mapped[str | None] = mapped_column(String(8))
    threads: Mapped[int | None] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeats: Mapped[int] = mapped_column(BigInteger, default=0)


def _upsert(session: Session, values: dict[str, Any], changes: dict[str, Any]) -> None:
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    statement = dialect.insert(WorkerRow).values(**values)
    session.execute(statement.on_conflict_do_update(index_elements=[WorkerRow.name], set_=changes))


def record_claim(session: Session, name: str, device: str, threads: int | None, now: datetime) -> None:
    """A claim from `name`: seen now, on `device`, with `threads` when it said."""
    _upsert(
        session,
        {"name": name, "device": device, "threads": threads, "first_seen": now, "last_seen": now, "heartbeats": 0},
        {"device": device, "threads": func.coalesce(threads, WorkerRow.threads), "last_seen": now},
    )


def record_heartbeat(session: Session, name: str, threads: int | None, now: datetime) -> None:
    """A heartbeat from `name`: seen and heard now, one more heartbeat, `threads` when it reported them."""
    _upsert(
        session,
        {"name": name, "threads": threads, "first_seen": now, "last_seen": now, "last_heartbeat": now, "heartbeats": 1},
        {
            "threads": func.coalesce(threads, WorkerRow.threads),
            "last_seen": now,
            "last_heartbeat": now,
            "heartbeats": WorkerRow.heartbeats + 1,
        },
    )


def current_job() -> Any:
    """For each worker row, the newest running job it holds (a correlated subquery)."""
    return (
        select(JobRow.id)
        .where(JobRow.worker == WorkerRow.name, JobRow.status == "running")
        .order_by(JobRow.started_at.desc(), JobRow.id.desc())
        .limit(1)
        .correlate(WorkerRow)
        .scalar_subquery()
    )


def seen_since(session: Session, since: datetime, limit: int | None = None, after: str | None = None) -> list[tuple[WorkerRow, str | None]]:
    """Workers seen at or after `since`, by name (after the name `after`), each with its current job."""
    query = select(WorkerRow, current_job()).where(WorkerRow.last_seen >= since).order_by(WorkerRow.name)
    if after is not None:
        query = query.where(WorkerRow.name > after)
    if limit is not None:
        query = query.limit(limit)
    return [(row, job) for row, job in session.execute(query)]


def count_seen_since(session: Session, since: datetime) -> int:
    return int(session.scalar(select(func.count()).select_from(WorkerRow).where(WorkerRow.last_seen >= since)) or 0)
