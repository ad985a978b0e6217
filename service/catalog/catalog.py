"""The catalog: every SQL statement of the data side lives here, behind small methods."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, delete, event, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from schemas.jobs import ACTIVE_STATUSES
from service.catalog.jobs import DynamicsRow, JobRow
from service.catalog.tables import Base, DatasetRow, EpisodeRow, FileRow, TagRow, TokenRow, VersionRow

T = TypeVar("T")

EPISODE_QUERY_CHUNK = 5_000


class CatalogConflict(Exception):
    """A row with the same unique name already exists."""


@dataclass(frozen=True)
class EpisodeState:
    last_step: int
    rows: int
    reward_sum: float
    ended_in: int | None
    fingerprint: str | None = None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Catalog:
    """Datasets, versions, tags, files, episodes and tokens. The job side runs its own statements through
    `session()` or `run()`; `create_all` makes its tables too."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Make the tables a new catalog lacks, and the columns (with their indexes) an older one lacks."""
        Base.metadata.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        inspector = inspect(self.engine)
        preparer = self.engine.dialect.identifier_preparer
        with self.engine.begin() as connection:
            for table in Base.metadata.sorted_tables:
                present = {column["name"] for column in inspector.get_columns(table.name)}
                missing = [column for column in table.columns if column.name not in present]
                for column in missing:
                    kind = column.type.compile(dialect=self.engine.dialect)
                    connection.exec_driver_sql(
                        f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)} {kind}"
                    )
                if missing:
                    for index in table.indexes:
                        index.create(connection, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    def listen(self, event_name: str, listener: Callable[..., Any]) -> None:
        """Attach an ORM session event (`after_flush`, `after_commit`, ...) to this catalog's sessions only."""
        event.listen(self._sessions, event_name, listener)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    async def run(self, work: Callable[[Session], T]) -> T:
        """`work` in one transaction on a worker thread, so the event loop goes on meanwhile."""

        def in_session() -> T:
            with self.session() as session:
                return work(session)

        return await asyncio.to_thread(in_session)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    # datasets

    def add_dataset(self, row: DatasetRow, first_version: VersionRow) -> None:
        try:
            with self.session() as session:
                session.add(row)
                session.flush()
                session.add(first_version)
        except IntegrityError as error:
            raise CatalogConflict(row.name) from error

    def dataset(self, name: str) -> DatasetRow | None:
        with self.session() as session:
            return session.scalar(select(DatasetRow).where(DatasetRow.name == name))

    def dataset_by_id(self, dataset_id: str) -> DatasetRow | None:
        with self.session() as session:
            return session.get(DatasetRow, dataset_id)

    def datasets(self, limit: int | None = None, after: str | None = None) -> list[DatasetRow]:
        query = select(DatasetRow).order_by(DatasetRow.name)
        if after is not None:
            query = query.where(DatasetRow.name > after)
        if limit is not None:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.scalars(query))

    def edit_dataset(self, dataset_id: str, description: str | None, extra: dict[str, Any], spec: dict[str, Any]) -> None:
        with self.session() as session:
            session.execute(
                update(DatasetRow).where(DatasetRow.id == dataset_id).values(description=description, extra=extra, spec=spec)
            )

    def count_datasets(self) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(DatasetRow)) or 0)

    def remove_dataset(self, dataset_id: str) -> None:
        """Every row of the dataset's own: its versions, files, episodes, tags and COMBO dynamics models."""
        with self.session() as session:
            for table in (TagRow, FileRow, EpisodeRow, VersionRow):
                session.execute(delete(table).where(table.dataset_id == dataset_id))
            session.execute(delete(DynamicsRow).where(DynamicsRow.dataset == dataset_id))
            session.execute(delete(DatasetRow).where(DatasetRow.id == dataset_id))

    def active_job_on(self, name: str) -> JobRow | None:
        """A queued or running job on dataset `name`, if there is one."""
        with self.session() as session:
            return session.scalars(
                select(JobRow).where(JobRow.dataset == name, JobRow.status.in_(ACTIVE_STATUSES)).limit(1)
            ).first()

    # versions

    def version(self, dataset_id: str, version: int) -> VersionRow | None:
        with self.session() as session:
            return session.get(VersionRow, (dataset_id, version))

    def version_by_key(self, dataset_id: str, idempotency_key: str) -> VersionRow | None:
        with self.session() as session:
            return session.scalar(
                select(VersionRow).where(VersionRow.dataset_id == dataset_id, VersionRow.idempotency_key == idempotency_key)
            )

    def versions(self, dataset_id: str, limit: int, before: int | None = None) -> list[VersionRow]:
        """Newest first."""
        query = select(VersionRow).where(VersionRow.dataset_id == dataset_id).order_by(VersionRow.version.desc()).limit(limit)
        if before is not None:
            query = query.where(VersionRow.version < before)
        with self.session() as session:
            return list(session.scalars(query))

    def record_version(self, version: VersionRow, files: Iterable[FileRow], episodes: dict[int, EpisodeState]) -> None:
        """Everything one accepted upload changes, in one transaction: the version, its files, episodes, totals."""
        with self.session() as session:
            session.add(version)
            session.add_all(files)
            existing = self._existing_episodes(session, version.dataset_id, list(episodes))
            new = [
                {"dataset_id": version.dataset_id, "episode_id": episode_id, **state.__dict__}
                for episode_id, state in episodes.items()
                if episode_id not in existing
            ]
            changed = [
                {"dataset_id": version.dataset_id, "episode_id": episode_id, **state.__dict__}
                for episode_id, state in episodes.items()
                if episode_id in existing
            ]
            if new:
                session.execute(EpisodeRow.__table__.insert(), new)
            if changed:
                session.execute(update(EpisodeRow), changed)
            session.execute(
                update(DatasetRow)
                .where(DatasetRow.id == version.dataset_id)
                .values(latest_version=version.version, rows=version.rows, episodes=version.episodes)
            )

    @staticmethod
    def _existing_episodes(session: Session, dataset_id: str, episode_ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(episode_ids), EPISODE_QUERY_CHUNK):
            chunk = episode_ids[start : start + EPISODE_QUERY_CHUNK]
            found.update(
                session.scalars(
                    select(EpisodeRow.episode_id).where(EpisodeRow.dataset_id == dataset_id, EpisodeRow.episode_id.in_(chunk))
                )
            )
        return found

    def episodes(self, dataset_id: str, episode_ids: list[int]) -> dict[int, EpisodeState]:
        states: dict[int, EpisodeState] = {}
        with self.session() as session:
            for start in range(0, len(episode_ids), EPISODE_QUERY_CHUNK):
                chunk = episode_ids[start : start + EPISODE_QUERY_CHUNK]
                for row in session.scalars(
                    select(EpisodeRow).where(EpisodeRow.dataset_id == dataset_id, EpisodeRow.episode_id.in_(chunk))
                ):
                    states[row.episode_id] = EpisodeState(row.last_step, row.rows, row.reward_sum, row.ended_in, row.fingerprint)
        return states

    def known_fingerprints(self, dataset_id: str, fingerprints: list[str]) -> set[str]:
        """Those of `fingerprints` that some stored episode of the dataset has."""
        found: set[str] = set()
        with self.session() as session:
            for start in range(0, len(fingerprints), EPISODE_QUERY_CHUNK):
                chunk = fingerprints[start : start + EPISODE_QUERY_CHUNK]
                found.update(
                    session.scalars(
                        select(EpisodeRow.fingerprint).where(
                            EpisodeRow.dataset_id == dataset_id, EpisodeRow.fingerprint.in_(chunk)
                        )
                    )
                )
        return found

    # files

    def files(self, dataset_id: str, paths: list[str]) -> dict[str, FileRow]:
        with self.session() as session:
            rows = session.scalars(select(FileRow).where(FileRow.dataset_id == dataset_id, FileRow.path.in_(paths)))
            return {row.path: row for row in rows}

    def add_files(self, files: Iterable[FileRow]) -> None:
        with self.session() as session:
            for file in files:
                session.merge(file)

    # tags

    def tags(self, dataset_id: str) -> list[TagRow]:
        with self.session() as session:
            return list(session.scalars(select(TagRow).where(TagRow.dataset_id == dataset_id).order_by(TagRow.name)))

    def tag(self, dataset_id: str, name: str) -> TagRow | None:
        with self.session() as session:
            return session.get(TagRow, (dataset_id, name))

    def set_tag(self, dataset_id: str, name: str, version: int) -> int | None:
        """Point the tag at `version`; returns the version it pointed at before (None for a new tag)."""
        with self.session() as session:
            existing = session.get(TagRow, (dataset_id, name), with_for_update=True)
            previous = existing.version if existing is not None else None
            session.merge(TagRow(dataset_id=dataset_id, name=name, version=version))
            return previous

    def remove_tag(self, dataset_id: str, name: str) -> bool:
        with self.session() as session:
            return bool(session.execute(delete(TagRow).where(TagRow.dataset_id == dataset_id, TagRow.name == name)).rowcount)

    # tokens

    def add_token(self, row: TokenRow) -> None:
        try:
            with self.session() as session:
                session.add(row)
        except IntegrityError as error:
            raise CatalogConflict(row.name) from error

    def token_by_hash(self, token_hash: str) -> TokenRow | None:
        with self.session() as session:
            return session.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash))

    def token(self, id_or_name: str) -> TokenRow | None:
        with self.session() as session:
            return session.scalar(select(TokenRow).where((TokenRow.id == id_or_name) | (TokenRow.name == id_or_name)))

    def tokens(self) -> list[TokenRow]:
        with self.session() as session:
            return list(session.scalars(select(TokenRow).order_by(TokenRow.created_at)))

    def revoke_token(self, token_id: str) -> None:
        with self.session() as session:
            session.execute(update(TokenRow).where(TokenRow.id == token_id).values(revoked=True))

    def replace_token_hash(self, token_id: str, token_hash: str, scopes: list[str]) -> None:
        with self.session() as session:
            session.execute(update(TokenRow).where(TokenRow.id == token_id).values(token_hash=token_hash, scopes=scopes, revoked=False))
