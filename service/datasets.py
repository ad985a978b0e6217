"""Datasets: creation, atomic appends as numbered versions, tags, statistics and snapshots.

Appends to one dataset are serialised by a lock held only for the commit: the body is parsed and validated
before it. The Delta log is the source of truth: each commit carries its user version, idempotency key and
body hash, and `reconcile` brings the catalog up to the log after a crash between the two.
Runs of small files (online collection appends many) are merged in the background by compaction commits of
their own, which hold no user version: version numbers and every version's files stay as they were.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import TypeAdapter

from schemas.dataset import (
    NAME_PATTERN,
    AppendResult,
    DatasetCreate,
    DatasetPublic,
    DatasetSpec,
    FileEntry,
    Page,
    VersionPublic,
    VersionStats,
)
from schemas.transition import EpisodeSummary, TransitionError, conform, conform_rows, summarize_episodes, transition_schema
from service import stats as statistics
from service import uploads
from service.catalog import Catalog, CatalogConflict, EpisodeState
from service.catalog.tables import DatasetRow, FileRow, VersionRow
from service.errors import ApiError, not_found
from service.settings import Settings
from service.storage.datasets import DataFile, DatasetStorage, StagedFile

log = logging.getLogger("replaybank.datasets")

_SPEC = TypeAdapter(DatasetSpec)
LATEST = "latest"


@dataclass(frozen=True)
class PreparedUpload:
    """An upload that passed validation and sits staged, waiting for its commit."""

    dataset_id: str
    staged: StagedFile
    episodes: EpisodeSummary
    moments: statistics.UploadMoments
    batch_id: str


@dataclass(frozen=True)
class CompactionPolicy:
    min_small_files: int = 16
    """Compact once the latest Delta version holds this many small files."""
    small_file_bytes: int = 8 << 20
    """Smaller files are merged, in runs that stop growing at this size; a client that already holds a
    version re-downloads at most the small files' bytes after a compaction."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "CompactionPolicy":
        return cls(min_small_files=settings.compaction_min_files, small_file_bytes=settings.compaction_small_file_bytes)

    def runs(self, files: list[FileRow]) -> list[list[FileRow]]:
        """Runs of consecutive small files (manifest order is row order) worth merging, or none."""
        if sum(1 for file in files if file.size < self.small_file_bytes) < self.min_small_files:
            return []
        runs: list[list[FileRow]] = []
        current: list[FileRow] = []
        for file in files:
            if file.size >= self.small_file_bytes:
                runs.append(current)
                current = []
                continue
            current.append(file)
            if sum(member.size for member in current) >= self.small_file_bytes:
                runs.append(current)
                current = []
        runs.append(current)
        return [run for run in runs if len(run) > 1]


def spec_of(row: DatasetRow) -> DatasetSpec:
    return _SPEC.validate_python(row.spec)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Datasets:
    def __init__(self, catalog: Catalog, storage: DatasetStorage, compaction: CompactionPolicy | None = None) -> None:
        self.catalog = catalog
        self.storage = storage
        self.compaction = compaction or CompactionPolicy()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._side_work = ThreadPoolExecutor(max_workers=2, thread_name_prefix="replaybank-stats")
        self._compaction_work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replaybank-compaction")
        self._compacting: set[str] = set()
        """Datasets with a compaction queued or running (guarded by _locks_guard): one at a time each."""

    def close(self) -> None:
        # A queued compaction can wait for the next start; one already running finishes its commit or discards.
        self._compaction_work.shutdown(wait=True, cancel_futures=True)
        self._side_work.shutdown(wait=True)

    def lock(self, dataset_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(dataset_id, threading.Lock())

    # datasets

    def create(self, request: DatasetCreate) -> DatasetPublic:
        if self.catalog.dataset(request.name) is not None:
            raise ApiError(409, "conflict", f"dataset {request.name!r} already exists", "name")
        spec = DatasetSpec(observation=request.observation, action=request.action, env_id=request.env_id)
        dataset_id = uuid.uuid4().hex
        now = datetime.now(timezone.utc)
        self.storage.create(
            dataset_id,
            transition_schema(spec),
            {"version": 0, "dataset": request.model_dump_json()},
        )
        row = DatasetRow(id=dataset_id, name=request.name, spec=spec.model_dump(mode="json"), extra=request.metadata, created_at=now)
        first = VersionRow(
            dataset_id=dataset_id, version=0, delta_version=0, rows=0, added_rows=0, episodes=0, created_at=now, stats=statistics.empty()
        )
        try:
            self.catalog.add_dataset(row, first)
        except CatalogConflict:
            self.storage.move_to_trash(dataset_id)
            self.storage.purge(dataset_id)
            raise ApiError(409, "conflict", f"dataset {request.name!r} already exists", "name") from None
        return self.public(row)

    def get(self, name: str) -> DatasetRow:
        row = self.catalog.dataset(name)
        if row is None:
            raise not_found(f"dataset {name!r}", "name")
        return row

    @staticmethod
    def public(row: DatasetRow) -> DatasetPublic:
        return DatasetPublic(
            name=row.name,
            metadata=row.extra,
            created_at=_utc(row.created_at),
            latest_version=row.latest_version,
            rows=row.rows,
            episodes=row.episodes,
            **row.spec,
        )

    def page(self, limit: int, cursor: str | None) -> Page[DatasetPublic]:
        rows = self.catalog.datasets(limit=limit + 1, after=cursor)
        following = rows[limit - 1].name if len(rows) > limit else None
        return Page(data=[self.public(row) for row in rows[:limit]], count=self.catalog.count_datasets(), next=following)

    def delete(self, name: str) -> None:
        row = self.get(name)
        with self.lock(row.id):
            self.storage.move_to_trash(row.id)
            self.catalog.remove_dataset(row.id)
            self.storage.purge(row.id)

    # versions and tags

    def resolve(self, row: DatasetRow, reference: str | int) -> VersionRow:
        """A version number, `latest` or a tag name, to the version it means now."""
        text = str(reference).strip()
        if text == LATEST:
            number = row.latest_version
        elif text.isdigit():
            number = int(text)
        else:
            tag = self.catalog.tag(row.id, text)
            if tag is None:
                raise not_found(f"version or tag {text!r} of dataset {row.name!r}", "version")
            number = tag.version
        version = self.catalog.version(row.id, number)
        if version is None:
            raise not_found(f"version {number} of dataset {row.name!r}", "version")
        return version

    def _tags_by_version(self, row: DatasetRow) -> dict[int, list[str]]:
        tags: dict[int, list[str]] = {}
        for tag in self.catalog.tags(row.id):
            tags.setdefault(tag.version, []).append(tag.name)
        return tags

    @staticmethod
    def _version_public(version: VersionRow, tags: list[str]) -> dict[str, Any]:
        return {
            "version": version.version,
            "rows": version.rows,
            "added_rows": version.added_rows,
            "episodes": version.episodes,
            "sources": version.stats.get("sources", {}),
            "created_at": _utc(version.created_at),
            "tags": tags,
        }

    def versions(self, name: str, limit: int, cursor: str | None) -> Page[VersionPublic]:
        row = self.get(name)
        before = None
        if cursor is not None:
            if not cursor.isdigit():
                raise ApiError(422, "invalid", "cursor must be the `next` value of a previous page", "cursor")
            before = int(cursor)
        versions = self.catalog.versions(row.id, limit + 1, before)
        tags = self._tags_by_version(row)
        data = [VersionPublic(**self._version_public(version, tags.get(version.version, []))) for version in versions[:limit]]
        following = str(versions[limit - 1].version) if len(versions) > limit else None
        return Page(data=data, count=row.latest_version + 1, next=following)

    def stats(self, name: str, reference: str) -> VersionStats:
        row = self.get(name)
        version = self.resolve(row, reference)
        moments = version.stats
        return VersionStats(
            **self._version_public(version, self._tags_by_version(row).get(version.version, [])),
            observation=statistics.dimensions(moments["observation"]),
            action=statistics.dimensions(moments["action"]),
            reward=statistics.distribution(moments["reward"]),
            episode_return=statistics.distribution(moments["episode_return"]),
            episode_length=statistics.distribution(moments["episode_length"]),
        )

    def set_tag(self, name: str, tag: str, reference: str | int) -> int:
        row = self.get(name)
        if tag == LATEST or tag.isdigit() or not _is_slug(tag):
            raise ApiError(422, "invalid", "a tag is a lowercase slug that is neither 'latest' nor a number", "tag")
        version = self.resolve(row, reference)
        self.catalog.set_tag(row.id, tag, version.version)
        return version.version

    def delete_tag(self, name: str, tag: str) -> None:
        row = self.get(name)
        if not self.catalog.remove_tag(row.id, tag):
            raise not_found(f"tag {tag!r} of dataset {name!r}", "tag")

    # appends

    def append(self, name: str, body: bytes | bytearray, kind: str, idempotency_key: str | None, body_sha256: str | None = None) -> AppendResult:
        """Validate, stage and commit a whole upload body as the next version."""
        body_sha256 = body_sha256 or hashlib.sha256(body).hexdigest()
        earlier = self.earlier_answer(name, idempotency_key, body_sha256)
        if earlier is not None:
            return earlier
        row = self.get(name)
        return self.commit(name, self._prepare_whole(row, spec_of(row), body, kind), idempotency_key, body_sha256)

    def _prepare_whole(self, row: DatasetRow, spec: DatasetSpec, body: bytes | bytearray, kind: str) -> PreparedUpload:
        batch_id = uuid.uuid4().hex
        table = uploads.parse(body, kind, spec)
        try:
            conformed = conform(table, spec, batch_id)
        except TransitionError as error:
            raise ApiError(422, "invalid_rows", error.message, error.field) from None
        del table
        # The file write and the statistics both release the GIL: run them side by side.
        measuring = self._side_work.submit(statistics.measure, conformed.table, spec)
        staged = self.storage.stage(row.id, conformed.table)
        return PreparedUpload(row.id, staged, conformed.episodes, measuring.result(), batch_id)

    def prepare_stream(self, name: str, source: Any, kind: str) -> PreparedUpload:
        """Validate and stage an Arrow stream or JSON body part by part as it is read from `source` (a blocking
        file), so checking and writing overlap the transfer. Nothing is visible until `commit`."""
        row = self.get(name)
        spec = spec_of(row)
        if kind == uploads.ARROW_STREAM:
            return self._prepare_parts(row, spec, uploads.arrow_parts(source))
        lines = uploads.JsonRowLines(source)
        try:
            return self._prepare_parts(row, spec, uploads.json_parts(lines, spec))
        except uploads.NotRowLines:
            return self._prepare_whole(row, spec, lines.whole_body(), kind)

    def _prepare_parts(self, row: DatasetRow, spec: DatasetSpec, parts: Iterator[pa.Table]) -> PreparedUpload:
        """Each part is checked and written while the next is still arriving; the episode rules, which need the
        whole upload, are checked at the end."""
        batch_id = uuid.uuid4().hex
        writer = self.storage.staging_writer(row.id)
        try:
            moments: statistics.UploadMoments | None = None
            episode_columns: list[pa.Table] = []
            offset = 0
            for table in parts:
                if table.num_rows == 0:
                    continue
                try:
                    part = conform_rows(table, spec, batch_id)
                except TransitionError as error:
                    raise ApiError(422, "invalid_rows", error.shifted(offset).message, error.field) from None
                measuring = self._side_work.submit(statistics.measure, part, spec)
                writer.write(part)
                episode_columns.append(part.select(["episode_id", "step", "reward", "terminal", "truncated"]))
                part_moments = measuring.result()
                moments = part_moments if moments is None else moments.merge(part_moments)
                offset += part.num_rows
            if moments is None:
                raise ApiError(422, "invalid_rows", "the upload has no rows", "rows")
            try:
                episodes = summarize_episodes(pa.concat_tables(episode_columns))
            except TransitionError as error:
                raise ApiError(422, "invalid_rows", error.message, error.field) from None
            staged = writer.close()
        except BaseException:
            writer.abort()
            raise
        return PreparedUpload(row.id, staged, episodes, moments, batch_id)

    def discard(self, prepared: PreparedUpload) -> None:
        self.storage.discard(prepared.dataset_id, prepared.staged)

    def knows_key(self, name: str, idempotency_key: str) -> bool:
        return self.catalog.version_by_key(self.get(name).id, idempotency_key) is not None

    def earlier_answer(self, name: str, idempotency_key: str | None, body_sha256: str) -> AppendResult | None:
        """The answer an upload with this key already got (same body), or None; 409 for a different body."""
        if idempotency_key is None:
            return None
        return self._earlier_answer(self.get(name).id, idempotency_key, body_sha256)

    def commit(self, name: str, prepared: PreparedUpload, idempotency_key: str | None, body_sha256: str) -> AppendResult:
        """Make a staged upload the next version (serialised per dataset); the staged file is removed on failure."""
        row = self.get(name)
        spec = spec_of(row)
        committed = False
        try:
            if row.id != prepared.dataset_id:
                raise not_found(f"dataset {name!r}", "name")
            with self.lock(row.id):
                self._catch_up(row.id)
                if idempotency_key is not None:
                    earlier = self._earlier_answer(row.id, idempotency_key, body_sha256)
                    if earlier is not None:
                        return earlier
                current = self.catalog.dataset_by_id(row.id)
                if current is None:
                    raise not_found(f"dataset {name!r}", "name")
                previous = self.catalog.version(row.id, current.latest_version)
                assert previous is not None
                prior = self.catalog.episodes(row.id, prepared.episodes.episode_ids.tolist())
                _check_continuation(prepared.episodes, prior)
                number = previous.version + 1
                staged = prepared.staged
                delta_version = self.storage.commit(
                    row.id,
                    [staged],
                    {"version": number, "idempotency_key": idempotency_key, "body_sha256": body_sha256, "batch_id": prepared.batch_id},
                )
                committed = True
                self._record(
                    current,
                    spec,
                    previous,
                    prepared.episodes,
                    prepared.moments,
                    prior,
                    number=number,
                    delta_version=delta_version,
                    idempotency_key=idempotency_key,
                    body_sha256=body_sha256,
                    batch_id=prepared.batch_id,
                    created_at=datetime.now(timezone.utc),
                    added=[DataFile(path=staged.path, size=staged.size, rows=staged.rows)],
                    checksums={staged.path: staged.sha256},
                )
        finally:
            if not committed:
                self.discard(prepared)
        self._schedule_compaction(row.id)
        return AppendResult(version=number, rows=prepared.moments.rows)

    def _earlier_answer(self, dataset_id: str, key: str, body_sha256: str) -> AppendResult | None:
        earlier = self.catalog.version_by_key(dataset_id, key)
        if earlier is None:
            return None
        if earlier.body_sha256 != body_sha256:
            raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different body", "Idempotency-Key")
        return AppendResult(version=earlier.version, rows=earlier.added_rows)

    def _record(
        self,
        dataset: DatasetRow,
        spec: DatasetSpec,
        previous: VersionRow,
        episodes: EpisodeSummary,
        moments: statistics.UploadMoments,
        prior: dict[int, EpisodeState],
        *,
        number: int,
        delta_version: int,
        idempotency_key: str | None,
        body_sha256: str | None,
        batch_id: str | None,
        created_at: datetime,
        added: list[DataFile] | None = None,
        checksums: dict[str, str] | None = None,
    ) -> None:
        """Write what a committed Delta version means into the catalog, in one transaction."""
        checksums = checksums or {}
        ids = episodes.episode_ids.tolist()
        prior_rows = np.array([prior[e].rows if e in prior else 0 for e in ids], dtype=np.int64)
        prior_returns = np.array([prior[e].reward_sum if e in prior else 0.0 for e in ids], dtype=np.float64)
        stats = statistics.advance(previous.stats, moments, episodes, prior_rows, prior_returns)
        updated = {
            episode_id: EpisodeState(
                last_step=int(last_step),
                rows=int(rows),
                reward_sum=float(reward_sum),
                ended_in=number if ended else None,
            )
            for episode_id, last_step, rows, reward_sum, ended in zip(
                ids,
                episodes.last_steps.tolist(),
                (prior_rows + episodes.rows).tolist(),
                (prior_returns + episodes.reward_sums).tolist(),
                episodes.ended.tolist(),
            )
        }
        new_episodes = sum(1 for episode_id in ids if episode_id not in prior)
        if added is None:
            added = self.storage.added_files(dataset.id, delta_version)
        files = [
            FileRow(
                dataset_id=dataset.id,
                path=file.path,
                size=file.size,
                sha256=checksums.get(file.path) or self.storage.checksum(dataset.id, file.path),
                rows=file.rows,
                version=number,
            )
            for file in added
        ]
        version = VersionRow(
            dataset_id=dataset.id,
            version=number,
            delta_version=delta_version,
            rows=previous.rows + moments.rows,
            added_rows=moments.rows,
            episodes=previous.episodes + new_episodes,
            created_at=created_at,
            idempotency_key=idempotency_key,
            body_sha256=body_sha256,
            batch_id=batch_id,
            stats=stats,
        )
        self.catalog.record_version(version, files, updated)

    # compaction

    def _schedule_compaction(self, dataset_id: str) -> None:
        """Queue a compaction check for the dataset unless one is already queued or running; never waits."""
        with self._locks_guard:
            if dataset_id in self._compacting:
                return
            self._compacting.add(dataset_id)
        try:
            self._compaction_work.submit(self._compact_in_background, dataset_id)
        except RuntimeError:  # shutting down: the next append after a restart checks again
            with self._locks_guard:
                self._compacting.discard(dataset_id)

    def _compact_in_background(self, dataset_id: str) -> None:
        try:
            self.compact(dataset_id)
        except Exception:
            # Nothing is committed unless the whole swap is: every version stays readable as it was.
            log.exception("dataset %s: compaction failed; its files stay as they are", dataset_id)
        finally:
            with self._locks_guard:
                self._compacting.discard(dataset_id)

    def compact(self, dataset_id: str) -> int:
        """Merge runs of small files of the latest Delta version in one commit of their own; returns the number
        of files merged away. The merged files are written outside the lock (appends go on meanwhile); the
        commit is serialised with appends and leaves every earlier Delta version, so every user version's
        manifest, untouched."""
        with self.lock(dataset_id):
            dataset = self.catalog.dataset_by_id(dataset_id)
            if dataset is None or not self.storage.exists(dataset_id):
                return 0
            self._catch_up(dataset_id)
            delta_version = self.storage.latest_delta_version(dataset_id)
        files = self._ordered_files(dataset, delta_version, dataset.latest_version)
        runs = self.compaction.runs(files)
        if not runs:
            return 0
        schema = transition_schema(spec_of(dataset))
        staged: list[tuple[list[FileRow], StagedFile]] = []
        committed = False
        try:
            for run in runs:
                staged.append((run, self.storage.merge(dataset_id, [file.path for file in run], schema)))
            with self.lock(dataset_id):
                if self.catalog.dataset_by_id(dataset_id) is None or not self.storage.exists(dataset_id):
                    return 0
                live = {file.path for file in self.storage.files(dataset_id, self.storage.latest_delta_version(dataset_id))}
                if any(file.path not in live for run in runs for file in run):
                    return 0
                # Recorded before the commit, so a manifest lists the merged file where its rows belong (the
                # version of its first rows); a crash in between leaves only an unused catalog row.
                self.catalog.add_files(
                    FileRow(dataset_id=dataset_id, path=merged.path, size=merged.size, sha256=merged.sha256, rows=merged.rows, version=run[0].version)
                    for run, merged in staged
                )
                self.storage.commit_compaction(
                    dataset_id,
                    {merged.path: [DataFile(path=file.path, size=file.size, rows=file.rows) for file in run] for run, merged in staged},
                    [merged for _, merged in staged],
                )
                committed = True
        finally:
            if not committed:
                for _, merged in staged:
                    self.storage.discard(dataset_id, merged)
        merged_away = sum(len(run) for run in runs) - len(runs)
        log.info("dataset %s: compacted %d small files into %d", dataset.name, merged_away + len(runs), len(runs))
        return merged_away

    # recovery

    def _catch_up(self, dataset_id: str) -> int:
        """Record Delta commits the catalog lacks (a crash or a catalog failure after a commit). Hold the lock."""
        dataset = self.catalog.dataset_by_id(dataset_id)
        if dataset is None:
            return 0
        latest = self.catalog.version(dataset_id, dataset.latest_version)
        assert latest is not None
        if self.storage.latest_delta_version(dataset_id) <= latest.delta_version:
            return 0
        spec = spec_of(dataset)
        schema = transition_schema(spec)
        recovered = 0
        for commit in self.storage.commits(dataset_id):
            number = int(commit.metadata["version"])
            if number <= latest.version:
                continue
            if number != latest.version + 1:
                raise RuntimeError(f"dataset {dataset.name}: Delta commit {commit.delta_version} holds version {number}, expected {latest.version + 1}")
            added = self.storage.added_files(dataset_id, commit.delta_version)
            table = self.storage.read_files(dataset_id, [file.path for file in added], schema)
            episodes = summarize_episodes(table)
            prior = self.catalog.episodes(dataset_id, episodes.episode_ids.tolist())
            self._record(
                dataset,
                spec,
                latest,
                episodes,
                statistics.measure(table, spec),
                prior,
                number=number,
                delta_version=commit.delta_version,
                idempotency_key=commit.metadata.get("idempotency_key"),
                body_sha256=commit.metadata.get("body_sha256"),
                batch_id=commit.metadata.get("batch_id"),
                created_at=datetime.fromtimestamp(commit.timestamp_ms / 1000, timezone.utc),
            )
            latest = self.catalog.version(dataset_id, number)
            assert latest is not None
            recovered += 1
        if recovered:
            log.warning("dataset %s: recovered %d committed version(s) missing from the catalog", dataset.name, recovered)
        return recovered

    def reconcile(self) -> None:
        """On start: finish interrupted deletes, adopt tables the catalog lacks, record commits it missed, clear the trash."""
        known = {row.id for row in self.catalog.datasets()}
        for dataset_id in self.storage.table_ids():
            if dataset_id not in known and self.storage.exists(dataset_id):
                self._adopt(dataset_id)
        for row in self.catalog.datasets():
            if not self.storage.exists(row.id):
                if self.storage.in_trash(row.id):
                    self.catalog.remove_dataset(row.id)
                else:
                    log.error("dataset %s: its Delta table %s is missing", row.name, self.storage.path(row.id))
                continue
            with self.lock(row.id):
                self._catch_up(row.id)
                removed = self.storage.remove_unreferenced(row.id)
            if removed:
                log.warning("dataset %s: removed %d staged file(s) an interrupted upload left behind", row.name, removed)
        self.storage.empty_trash()

    def _adopt(self, dataset_id: str) -> None:
        """Register a Delta table the catalog does not know (a lost catalog, or a crash inside `create`).

        Version 0's commit carries the creation request, so name, spec and metadata come back as they were;
        `_catch_up` then replays every later commit.
        """
        commits = self.storage.commits(dataset_id)
        if not commits or commits[0].metadata.get("version") != "0" or "dataset" not in commits[0].metadata:
            log.error("table %s is not a replaybank dataset (no creation record); left alone", self.storage.path(dataset_id))
            return
        request = DatasetCreate.model_validate_json(commits[0].metadata["dataset"])
        created_at = datetime.fromtimestamp(commits[0].timestamp_ms / 1000, timezone.utc)
        spec = DatasetSpec(observation=request.observation, action=request.action, env_id=request.env_id)
        row = DatasetRow(id=dataset_id, name=request.name, spec=spec.model_dump(mode="json"), extra=request.metadata, created_at=created_at)
        first = VersionRow(
            dataset_id=dataset_id, version=0, delta_version=commits[0].delta_version, rows=0, added_rows=0, episodes=0,
            created_at=created_at, stats=statistics.empty(),
        )
        try:
            self.catalog.add_dataset(row, first)
        except CatalogConflict:
            log.error("table %s holds dataset %r, but that name is taken in the catalog; left alone", self.storage.path(dataset_id), request.name)
            return
        log.warning("dataset %s: adopted from its Delta table, which the catalog did not know", request.name)

    # reading

    def manifest(self, name: str, reference: str) -> tuple[VersionRow, list[FileEntry]]:
        """The files of a version, oldest first (the order of its rows); the same for the version forever."""
        row = self.get(name)
        version = self.resolve(row, reference)
        return version, self._files(row, version)

    def _files(self, row: DatasetRow, version: VersionRow) -> list[FileEntry]:
        ordered = self._ordered_files(row, version.delta_version, version.version)
        return [FileEntry(path=file.path, size=file.size, sha256=file.sha256, rows=file.rows) for file in ordered]

    def _ordered_files(self, row: DatasetRow, delta_version: int, version_number: int) -> list[FileRow]:
        """The files of a Delta version in row order: by the version that first added their rows."""
        files = self.storage.files(row.id, delta_version)
        known = self.catalog.files(row.id, [file.path for file in files])
        missing = [file for file in files if file.path not in known]
        if missing:
            # Files the catalog lacks (a rebuilt catalog) get checksums on first use; a merged file sits where
            # the first file it replaced sat.
            first_sources: dict[str, str] = {}
            for compaction in self.storage.compactions(row.id):
                first_sources.update(compaction.first_sources)
            computed = [
                FileRow(
                    dataset_id=row.id,
                    path=file.path,
                    size=file.size,
                    sha256=self.storage.checksum(row.id, file.path),
                    rows=file.rows,
                    version=self._first_version(row.id, file.path, first_sources, version_number),
                )
                for file in missing
            ]
            self.catalog.add_files(computed)
            known.update({file.path: file for file in computed})
        return sorted(known.values(), key=lambda file: (file.version, file.path))

    def _first_version(self, dataset_id: str, path: str, first_sources: dict[str, str], fallback: int) -> int:
        while path in first_sources:
            path = first_sources[path]
            known = self.catalog.files(dataset_id, [path]).get(path)
            if known is not None:
                return known.version
        return fallback

    def file(self, name: str, reference: str, file_name: str) -> tuple[FileEntry, str]:
        row = self.get(name)
        _, entries = self.manifest(name, reference)
        for entry in entries:
            if entry.path == file_name:
                return entry, str(self.storage.file_path(row.id, entry.path))
        raise not_found(f"file {file_name!r} in that version", "file")

    def snapshot(self, name: str, reference: str) -> tuple[VersionRow, pa.Schema, Iterator[pa.RecordBatch]]:
        """A version's rows as batches in the dataset's schema, in the order of its file manifest."""
        row = self.get(name)
        version = self.resolve(row, reference)
        schema = transition_schema(spec_of(row))
        paths = [file.path for file in self._files(row, version)]
        return version, schema, self.storage.batches(row.id, paths, schema)

    def pinned(self, name: str, reference: str) -> tuple[VersionRow, pa.Schema, Any]:
        """A version's rows as a pyarrow dataset (for queries) and the schema to cast it to."""
        row = self.get(name)
        version = self.resolve(row, reference)
        schema = transition_schema(spec_of(row))
        return version, schema, self.storage.dataset(row.id, version.delta_version, schema)


def _is_slug(text: str) -> bool:
    return re.fullmatch(NAME_PATTERN, text) is not None


def _check_continuation(episodes: EpisodeSummary, prior: dict[int, EpisodeState]) -> None:
    """Refuse rows for episodes that already ended, or that repeat steps stored in an earlier version."""
    for episode_id, first_step in zip(episodes.episode_ids.tolist(), episodes.first_steps.tolist()):
        state = prior.get(episode_id)
        if state is None:
            continue
        if state.ended_in is not None:
            raise ApiError(422, "invalid_rows", f"episode {episode_id} already ended in version {state.ended_in}", "episode_id")
        if first_step <= state.last_step:
            raise ApiError(
                422,
                "invalid_rows",
                f"episode {episode_id} already has steps up to {state.last_step} in an earlier version; this upload starts at {first_step}",
                "step",
            )
