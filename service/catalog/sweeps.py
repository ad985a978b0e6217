"""Catalog tables for sweeps: the sweep as submitted, and which jobs belong to it in which role."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.catalog.tables import Base


class SweepRow(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    """The version every job of the sweep uses, pinned at submission."""
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The SweepCreate as submitted (its `version` as requested), JSON."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SweepJobRow(Base):
    """A job of a sweep: a train job (one grid point), or the evaluation ("ope", "env") of one train job's policy.

    The unique (sweep, train job, role) is what keeps a train job's evaluations from being submitted twice."""

    __tablename__ = "sweep_jobs"
    __table_args__ = (UniqueConstraint("sweep_id", "train_job_id", "role"),)

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(String(40), ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8))
    """"train", "ope" or "env"."""
    train_job_id: Mapped[str] = mapped_column(String(40), index=True)
    """The train job this row is about: its own id for a train job, the evaluated policy's for an evaluation."""
    point: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Train jobs: the swept parameters' values; evaluations: empty."""
    error: Mapped[str | None] = mapped_column(Text)
    """Train jobs: why their policy's evaluations could not be submitted."""
