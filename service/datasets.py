"""Datasets: creation and deletion, versions and tags, statistics, file manifests and snapshots.

Appends to one dataset are serialised by `Datasets.lock` (held only for the commit, across every replica of a
deployment on PostgreSQL) and every committed
Delta version is written into the catalog by `record_version`. The append path lives in `service.ingest`,
background compaction in `service.compaction`, and bringing the catalog up to the Delta log after a crash
in `service.recovery`.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import TypeAdapter

from schemas.dataset import (
    NAME_PATTERN,
    DatasetCreate,
    DatasetPatch,
    DatasetPublic,
    DatasetSpec,
    FileEntry,
    Page,
    TagMoved,
    TagPublic,
    VersionPublic,
    VersionStats,
)
from schemas.transition import EpisodeSummary, transition_schema
from service import fingerprints
from service import stats as statistics
from service.catalog import Catalog, CatalogConflict, EpisodeState
from service.catalog.tables import DatasetRow, FileRow, VersionRow
from service.errors import ApiError, not_found
from service.locks import Locks
from service.pages import page
from service.storage.artifacts import ArtifactStorage
from service.storage.datasets import DataFile, DatasetStorage
from service.storage.stores import StoredFile

_SPEC = TypeAdapter(DatasetSpec)
LATEST = "latest"
MANIFESTS_KEPT = 256
"""Version manifests a service keeps in memory (most recently used): a pull asks for one per file it downloads."""


def spec_of(row: DatasetRow) -> DatasetSpec:
    return _SPEC.validate_python(row.spec)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def dataset_rows(dataset_id: str, request: DatasetCreate, created_at: datetime, delta_version: int) -> tuple[DatasetRow, VersionRow]:
    """The catalog rows of a new dataset: the dataset itself and its empty version 0 at `delta_version`."""
    spec = DatasetSpec(observation=request.observation, action=request.action, env_id=request.env_id)
    row = DatasetRow(
        id=dataset_id,
        name=request.name,
        spec=spec.model_dump(mode="json"),
        extra=request.metadata,
        description=request.description,
        created_at=created_at,
    )
    first = VersionRow(
        dataset_id=dataset_id,
        version=0,
        delta_version=delta_version,
        rows=0,
        added_rows=0,
        episodes=0,
        created_at=created_at,
        stats=statistics.empty(),
    )
    return row, first


class Datasets:
    def __init__(self, catalog: Catalog, storage: DatasetStorage, artifacts: ArtifactStorage, locks: Locks) -> None:
        self.catalog = catalog
        self.storage = storage
        self.artifacts = artifacts
        self.locks = locks
        self._manifests: OrderedDict[tuple[str, int], list[FileEntry]] = OrderedDict()
        """By (dataset id, Delta version): a Delta version never changes, so neither does its manifest, in any replica."""
        self._manifests_guard = threading.Lock()

    def lock(self, dataset_id: str) -> AbstractContextManager[None]:
        """The dataset's committer lock: creation, appends, compaction commits, recovery, edits and deletion
        hold it, in whichever replica they run."""
        return self.locks.hold(f"dataset:{dataset_id}")

    # datasets

    def create(self, request: DatasetCreate) -> DatasetPublic:
        if self.catalog.dataset(request.name) is not None:
            raise ApiError(409, "conflict", f"dataset {request.name!r} already exists", "name")
        dataset_id = uuid.uuid4().hex
        row, first = dataset_rows(dataset_id, request, datetime.now(timezone.utc), delta_version=0)
        # Held from the table's creation to its catalog row, so a replica starting meanwhile does not adopt
        # the table as one the catalog lost (`recovery.reconcile` takes the same lock).
        with self.lock(dataset_id):
            self.storage.create(dataset_id, transition_schema(spec_of(row)), {"version": 0, "dataset": request.model_dump_json()})
            try:
                self.catalog.add_dataset(row, first)
            except CatalogConflict:
                self.storage.move_to_trash(dataset_id)
                self.storage.purge(dataset_id)
                raise ApiError(409, "conflict", f"dataset {request.name!r} already exists", "name") from None
        return self.public(row)

    def get(self, name: str, field: str = "name") -> DatasetRow:
        """The dataset called `name`, or a 404 naming `field` (the request's field that named it)."""
        row = self.catalog.dataset(name)
        if row is None:
            raise not_found(f"dataset {name!r}", field)
        return row


    @staticmethod
    def public(row: DatasetRow) -> DatasetPublic:
        return DatasetPublic(
            name=row.name,
            metadata=row.extra,
            description=row.description,
            created_at=_utc(row.created_at),
            latest_version=row.latest_version,
            rows=row.rows,
            episodes=row.episodes,
            **row.spec,
        )

    def page(self, limit: int, cursor: str | None) -> Page[DatasetPublic]:
        """By name; the cursor is the name of the last dataset shown."""
        rows = self.catalog.datasets(limit=limit + 1, after=cursor)
        return page(rows, limit, self.catalog.count_datasets(), self.public, lambda row: row.name)

    def edit(self, name: str, patch: DatasetPatch) -> DatasetPublic:
        """Replace the fields `patch` names: beside the table first (what recovery reads), then in the catalog."""
        row = self.get(name)
        with self.lock(row.id):
            current = self.catalog.dataset_by_id(row.id)
            if current is None:
                raise not_found(f"dataset {name!r}", "name")
            card = {"description": current.description, "metadata": current.extra, "env_id": current.spec.get("env_id")}
            card.update(patch.model_dump(include=patch.model_fields_set))
            self.storage.write_card(row.id, card)
            self.catalog.edit_dataset(row.id, card["description"], card["metadata"], {**current.spec, "env_id": card["env_id"]})
            edited = self.catalog.dataset_by_id(row.id)
        assert edited is not None
        return self.public(edited)

    def delete(self, name: str) -> None:
        """Remove the dataset and everything of its own: its Delta table, its catalog rows and its COMBO
        dynamics models. Refused (409) while a queued or running job uses it: the job would lose its data."""
        row = self.get(name)
        job = self.catalog.active_job_on(row.name)
        if job is not None:
            raise ApiError(
                409, "conflict", f"dataset {name} is used by job {job.id}, which is {job.status}; cancel it first", "name"
            )
        with self.lock(row.id):
            self.storage.move_to_trash(row.id)
            self.catalog.remove_dataset(row.id)
            self.artifacts.remove_dataset(row.id)
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
            raise ApiError(404, "not_found", f"dataset {row.name!r} has no version {number} (latest is {row.latest_version})", "version")
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
            "duplicate_episodes": version.stats.get("duplicate_episodes", 0),
            "created_at": _utc(version.created_at),
            "tags": tags,
        }

    def versions(self, name: str, limit: int, cursor: str | None) -> Page[VersionPublic]:
        """Newest first; the cursor is the number of the last version shown."""
        row = self.get(name)
        before = None
        if cursor is not None:
            if not cursor.isdigit():
                raise ApiError(422, "invalid", "cursor must be the `next` value of a previous page", "cursor")
            before = int(cursor)
        versions = self.catalog.versions(row.id, limit + 1, before)
        tags = self._tags_by_version(row)

        def public(version: VersionRow) -> VersionPublic:
            return VersionPublic(**self._version_public(version, tags.get(version.version, [])))

        return page(versions, limit, row.latest_version + 1, public, lambda version: str(version.version))

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

    def tags(self, name: str) -> Page[TagPublic]:
        tags = [TagPublic(name=tag.name, version=tag.version) for tag in self.catalog.tags(self.get(name).id)]
        return Page(data=tags, count=len(tags))

    def set_tag(self, name: str, tag: str, reference: str | int) -> TagMoved:
        row = self.get(name)
        if tag == LATEST or tag.isdigit() or not _is_slug(tag):
            raise ApiError(422, "invalid", "a tag is a lowercase slug that is neither 'latest' nor a number", "tag")
        version = self.resolve(row, reference)
        previous = self.catalog.set_tag(row.id, tag, version.version)
        return TagMoved(name=tag, version=version.version, previous=previous)

    def delete_tag(self, name: str, tag: str) -> None:
        row = self.get(name)
        if not self.catalog.remove_tag(row.id, tag):
            raise not_found(f"tag {tag!r} of dataset {name!r}", "tag")

    def record_version(
        self,
        dataset: DatasetRow,
        spec: DatasetSpec,
        previous: VersionRow,
        episodes: EpisodeSummary,
        moments: statistics.UploadMoments,
        lanes: fingerprints.EpisodeLanes,
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
    ) -> int:
        """Write what a committed Delta version means into the catalog, in one transaction. Returns how many
        of the upload's whole episodes repeat the content of an episode already stored."""
        checksums = checksums or {}
        ids = episodes.episode_ids.tolist()
        prior_rows = np.array([prior[e].rows if e in prior else 0 for e in ids], dtype=np.int64)
        prior_returns = np.array([prior[e].reward_sum if e in prior else 0.0 for e in ids], dtype=np.float64)
        stats = statistics.advance(previous.stats, moments, episodes, prior_rows, prior_returns)
        whole = fingerprints.whole_episodes(lanes, episodes, set(prior))
        known = self.catalog.known_fingerprints(dataset.id, list(set(whole.values())))
        duplicates = sum(1 for fingerprint in whole.values() if fingerprint in known)
        stats["duplicate_episodes"] = duplicates
        updated = {
            episode_id: EpisodeState(
                last_step=int(last_step),
                rows=int(rows),
                reward_sum=float(reward_sum),
                ended_in=number if ended else None,
                fingerprint=whole.get(episode_id),
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
        return duplicates

    # reading

    def manifest(self, name: str, reference: str) -> tuple[VersionRow, list[FileEntry]]:
        """The files of a version, oldest first (the order of its rows); the same for the version forever."""
        row = self.get(name)
        version = self.resolve(row, reference)
        return version, self._files(row, version)

    def _files(self, row: DatasetRow, version: VersionRow) -> list[FileEntry]:
        key = (row.id, version.delta_version)
        with self._manifests_guard:
            if key in self._manifests:
                self._manifests.move_to_end(key)
                return list(self._manifests[key])
        ordered = self.ordered_files(row, version.delta_version, version.version)
        entries = [FileEntry(path=file.path, size=file.size, sha256=file.sha256, rows=file.rows) for file in ordered]
        with self._manifests_guard:
            self._manifests[key] = entries
            while len(self._manifests) > MANIFESTS_KEPT:
                self._manifests.popitem(last=False)
        return list(entries)

    def ordered_files(self, row: DatasetRow, delta_version: int, version_number: int) -> list[FileRow]:
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

    def file(self, name: str, reference: str, file_name: str) -> tuple[FileEntry, StoredFile]:
        row = self.get(name)
        _, entries = self.manifest(name, reference)
        for entry in entries:
            if entry.path == file_name:
                return entry, self.storage.stored_file(row.id, entry.path, entry.size)
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
