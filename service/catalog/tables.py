"""The catalog's tables (SQLAlchemy 2 declarative). Other modules add their tables on the same `Base`.

A column added to a table after catalogs were made must be nullable: `Catalog.create_all` adds it, with
its indexes, to a catalog that lacks it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Also the name of the dataset's storage folder, so a re-created name never meets old files."""
    name: Mapped[str] = mapped_column(String(64), unique=True)
    spec: Mapped[dict[str, Any]]
    """DatasetSpec as JSON: observation, action, env_id."""
    extra: Mapped[dict[str, Any]]
    """The user's free metadata."""
    description: Mapped[str | None] = mapped_column(Text, default=None)
    """The dataset card, in Markdown."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    episodes: Mapped[int] = mapped_column(BigInteger, default=0)


class VersionRow(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "idempotency_key"),)

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    delta_version: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    added_rows: Mapped[int] = mapped_column(BigInteger)
    episodes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    body_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    batch_id: Mapped[str | None] = mapped_column(String(32), default=None)
    stats: Mapped[dict[str, Any]]
    """Running sums the next version's statistics start from, plus the distributions shown to users."""


class TagRow(Base):
    __tablename__ = "dataset_tags"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class FileRow(Base):
    """A data file of a dataset: immutable once written, so its checksum is computed once."""

    __tablename__ = "dataset_files"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(300), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    """Where the file's rows start: the version whose commit added it, or for a compacted file the version of
    the first file it replaced. Manifests list files in this order, which is row order."""


class EpisodeRow(Base):
    """Where each episode stands after the latest version: ended, or open at its last step."""

    __tablename__ = "dataset_episodes"
    __table_args__ = (Index("ix_dataset_episodes_fingerprint", "dataset_id", "fingerprint"),)

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    episode_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_step: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(BigInteger)
    reward_sum: Mapped[float] = mapped_column(Float)
    ended_in: Mapped[int | None] = mapped_column(Integer, default=None)
    """The version whose upload ended the episode; None while it is open."""
    fingerprint: Mapped[str | None] = mapped_column(String(32), default=None)
    """A hash of the episode's content (`service.fingerprints`) when one upload held it whole."""


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
