"""One Delta Lake table per dataset. Writes are serialised by the caller; every call here blocks (run in threads)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties
from deltalake.transaction import AddAction, RemoveAction

from service.storage.staging import StagedFile, StagingWriter
from service.storage.stores import Store, StoredFile

METADATA_PREFIX = "replaybank."
TABLE_CONFIGURATION = {
    # Every version stays readable: the log is never trimmed.
    "delta.enableExpiredLogCleanup": "false",
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.deletedFileRetentionDuration": "interval 36500 days",
}
BATCH_ROWS = 65_536
COMPACTION_KEY = "compaction"
"""Custom metadata of a compaction commit (no `version` key): merged file -> the first file it replaced."""
KEEP_LOG = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
CARD_FILE = "_replaybank_card.json"
"""Beside the Delta log: what the dataset's editable fields are now (see `DatasetStorage.write_card`)."""


@dataclass(frozen=True)
class DataFile:
    path: str
    """Relative to the table's folder, as the Delta log names it."""
    size: int
    rows: int


@dataclass(frozen=True)
class Compaction:
    delta_version: int
    first_sources: dict[str, str]
    """Each merged file's path to the path of the first file it replaced (the start of its rows)."""


@dataclass(frozen=True)
class Commit:
    delta_version: int
    metadata: dict[str, str]
    """Our custom commit metadata, without the prefix (version, idempotency_key, body_sha256, batch_id)."""
    timestamp_ms: int


class DatasetStorage:
    """The tables live under `datasets/<id>/` of the store. A deleted table is first put out of sight under
    `trash/`: moved there at once in a local folder; in object storage, which cannot rename, a marker
    `trash/<id>` hides it until its objects are deleted."""

    def __init__(self, store: Store) -> None:
        self._handles: dict[str, DeltaTable] = {}
        """Open tables for the commit path, refreshed incrementally; used only under the dataset's lock."""
        self.store = store

    @staticmethod
    def _key(dataset_id: str, relative: str = "") -> str:
        return f"datasets/{dataset_id}/{relative}".rstrip("/")

    def path(self, dataset_id: str) -> str:
        """Where the table is, as delta-rs opens it (a folder, or an s3:// URL)."""
        return self.store.table_uri(self._key(dataset_id))

    def _table(self, dataset_id: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.path(dataset_id), version=version, storage_options=self.store.storage_options)

    def exists(self, dataset_id: str) -> bool:
        if self.store.exists(f"trash/{dataset_id}"):
            return False
        return DeltaTable.is_deltatable(self.path(dataset_id), storage_options=self.store.storage_options)

    def table_ids(self) -> list[str]:
        return self.store.children("datasets")

    def ping(self) -> None:
        self.store.ping()

    def create(self, dataset_id: str, schema: pa.Schema, metadata: dict[str, str]) -> None:
        DeltaTable.create(
            self.path(dataset_id),
            schema,
            storage_options=self.store.storage_options,
            mode="error",
            configuration=TABLE_CONFIGURATION,
            commit_properties=CommitProperties(custom_metadata=_prefixed(metadata)),
            post_commithook_properties=KEEP_LOG,
        )

    def write_card(self, dataset_id: str, card: dict[str, Any]) -> None:
        """Keep the dataset's editable fields (description, metadata, env_id) beside its table, replaced
        atomically (a temporary file, fsync, rename). Version 0's commit holds the dataset as created; this
        file what edits made of it, so a catalog rebuilt from the table keeps them. No Delta commit: an edit
        changes no data, and must not become a Delta version that the version mapping and compaction skip."""
        self.store.put_bytes(self._key(dataset_id, CARD_FILE), json.dumps(card).encode())

    def card(self, dataset_id: str) -> dict[str, Any] | None:
        """The editable fields `write_card` last kept; None when the dataset was never edited."""
        data = self.store.get_bytes(self._key(dataset_id, CARD_FILE))
        return None if data is None else json.loads(data.decode("utf-8"))

    def staging_writer(self, dataset_id: str) -> StagingWriter:
        """A new Parquet file in the table's folder, written part by part; invisible to every version until `commit`."""
        relative = f"part-{uuid.uuid4().hex}.parquet"
        return StagingWriter(self.store.writer(self._key(dataset_id, relative)), relative)

    def stage(self, dataset_id: str, table: pa.Table) -> StagedFile:
        writer = self.staging_writer(dataset_id)
        try:
            writer.write(table)
            return writer.close()
        except BaseException:
            writer.abort()
            raise

    def discard(self, dataset_id: str, staged: StagedFile) -> None:
        self.store.delete(self._key(dataset_id, staged.path))

    def commit(self, dataset_id: str, staged: list[StagedFile], metadata: dict[str, Any]) -> int:
        """One atomic Delta commit adding the staged files; returns its Delta version. The caller serialises commits."""
        table = self._handle(dataset_id)
        now_ms = int(time.time() * 1000)
        table.create_write_transaction(
            [AddAction(file.path, file.size, {}, now_ms, True, file.stats) for file in staged],
            mode="append",
            schema=table.schema(),
            commit_properties=CommitProperties(custom_metadata=_prefixed(metadata), max_commit_retries=0),
            post_commithook_properties=KEEP_LOG,
        )
        table.update_incremental()
        return table.version()

    def commit_compaction(self, dataset_id: str, merged: dict[str, list[DataFile]], staged: list[StagedFile]) -> int:
        """One Delta commit swapping runs of files for the merged files holding the same rows (dataChange=false).

        `merged` maps each staged file's path to the files it replaces, in row order. The commit carries no
        user version, so `commits` and the catalog skip it; earlier Delta versions keep their files. The
        caller serialises commits."""
        table = self._handle(dataset_id)
        now_ms = int(time.time() * 1000)
        removes = [RemoveAction(file.path, False, now_ms, file.size) for sources in merged.values() for file in sources]
        adds = [AddAction(file.path, file.size, {}, now_ms, False, file.stats) for file in staged]
        first_sources = {path: sources[0].path for path, sources in merged.items()}
        table.create_write_transaction(
            [*removes, *adds],
            mode="append",
            schema=table.schema(),
            commit_properties=CommitProperties(
                custom_metadata=_prefixed({COMPACTION_KEY: json.dumps(first_sources)}), max_commit_retries=0
            ),
            post_commithook_properties=KEEP_LOG,
        )
        table.update_incremental()
        return table.version()

    def compactions(self, dataset_id: str) -> list[Compaction]:
        """Our compaction commits, oldest first."""
        found = []
        for entry in self._table(dataset_id).history():
            first_sources = entry.get(METADATA_PREFIX + COMPACTION_KEY)
            if first_sources is not None:
                found.append(Compaction(delta_version=int(entry["version"]), first_sources=json.loads(first_sources)))
        return sorted(found, key=lambda compaction: compaction.delta_version)

    def remove_unreferenced(self, dataset_id: str, min_age: timedelta) -> int:
        """Delete data files no version refers to that are at least `min_age` old: those a crash left before
        their commit. Younger ones may belong to an upload another replica has staged and not yet committed.

        Only compactions remove files from the table, so every file some Delta version holds is in the
        latest version or in the version just before a compaction."""
        referenced = {file.path for file in self.files(dataset_id, self.latest_delta_version(dataset_id))}
        for compaction in self.compactions(dataset_id):
            referenced.update(file.path for file in self.files(dataset_id, compaction.delta_version - 1))
        cutoff = datetime.now(timezone.utc) - min_age
        removed = 0
        for name, modified in self.store.modified_times(self._key(dataset_id)).items():
            if name.endswith(".parquet") and name not in referenced and modified <= cutoff:
                self.store.delete(self._key(dataset_id, name))
                removed += 1
        return removed

    def merge(self, dataset_id: str, paths: list[str], schema: pa.Schema) -> StagedFile:
        """One new staged file holding the rows of `paths`, in that order."""
        writer = self.staging_writer(dataset_id)
        try:
            for batch in self.batches(dataset_id, paths, schema):
                writer.write(pa.Table.from_batches([batch]))
            return writer.close()
        except BaseException:
            writer.abort()
            raise

    def _handle(self, dataset_id: str) -> DeltaTable:
        table = self._handles.get(dataset_id)
        if table is None:
            table = self._handles[dataset_id] = self._table(dataset_id)
        else:
            table.update_incremental()
        return table

    def latest_delta_version(self, dataset_id: str) -> int:
        """The table's newest Delta version (call under the dataset's lock)."""
        return self._handle(dataset_id).version()

    def commits(self, dataset_id: str) -> list[Commit]:
        """Our commits (those carrying a user version), oldest first."""
        commits = []
        for entry in self._table(dataset_id).history():
            ours = {key[len(METADATA_PREFIX) :]: str(value) for key, value in entry.items() if key.startswith(METADATA_PREFIX)}
            if "version" in ours:
                commits.append(Commit(delta_version=int(entry["version"]), metadata=ours, timestamp_ms=int(entry.get("timestamp", 0))))
        return sorted(commits, key=lambda commit: commit.delta_version)

    def files(self, dataset_id: str, delta_version: int) -> list[DataFile]:
        """The data files making up the table at `delta_version`, in log order."""
        actions = pa.table(self._table(dataset_id, delta_version).get_add_actions(flatten=True))
        return [
            DataFile(path=path, size=size, rows=rows if rows is not None else -1)
            for path, size, rows in zip(
                actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(), actions.column("num_records").to_pylist()
            )
        ]

    def added_files(self, dataset_id: str, delta_version: int) -> list[DataFile]:
        before = {file.path for file in self.files(dataset_id, delta_version - 1)} if delta_version > 0 else set()
        return [file for file in self.files(dataset_id, delta_version) if file.path not in before]

    def stored_file(self, dataset_id: str, relative: str, size: int) -> StoredFile:
        return StoredFile(self._key(dataset_id, relative), size)

    def open_file(self, dataset_id: str, relative: str) -> pa.NativeFile:
        """A data file opened for reading (seekable), wherever it is."""
        return self.store.open_input(self._key(dataset_id, relative))

    def checksum(self, dataset_id: str, relative: str) -> str:
        digest = hashlib.sha256()
        with self.open_file(dataset_id, relative) as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def dataset(self, dataset_id: str, delta_version: int, schema: pa.Schema) -> pads.Dataset:
        """The rows of one Delta version, read in the dataset's schema (fixed-size lists restored).

        delta-rs gives each file a guarantee built from its add-action statistics, and a column without
        statistics there (we record them for episode_id, step and reward only) gets `col >= null and
        col <= null`, which lets pyarrow prune every file from a filter such as `source = 'logged'` or
        `terminal = true`. The files are kept and their guarantees dropped; the row-group statistics
        inside each Parquet file still let a filter skip data.
        """
        delta = self._table(dataset_id, delta_version).to_pyarrow_dataset(schema=schema)
        fragments = [delta.format.make_fragment(fragment.path, filesystem=delta.filesystem) for fragment in delta.get_fragments()]
        return pads.FileSystemDataset(fragments, schema, delta.format, delta.filesystem)

    def read_files(self, dataset_id: str, paths: list[str], schema: pa.Schema) -> pa.Table:
        if not paths:
            return schema.empty_table()
        files = [self.store.fs_path(self._key(dataset_id, path)) for path in paths]
        return pads.dataset(files, format="parquet", filesystem=self.store.filesystem).to_table().cast(schema)

    def batches(self, dataset_id: str, paths: list[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """The rows of the given files, in that order, cast to the dataset's schema."""
        for path in paths:
            with pq.ParquetFile(self.open_file(dataset_id, path)) as file:
                for batch in file.iter_batches(batch_size=BATCH_ROWS):
                    yield batch.cast(schema)

    def move_to_trash(self, dataset_id: str) -> None:
        """Take the table out of sight at once (a rename, or a marker); `purge` deletes it later."""
        self._handles.pop(dataset_id, None)
        if self.store.renames:
            self.store.move_tree(self._key(dataset_id), f"trash/{dataset_id}")
        else:
            self.store.put_bytes(f"trash/{dataset_id}", b"")

    def purge(self, dataset_id: str) -> None:
        """Delete a table put in the trash; its marker (in object storage) goes last."""
        if self.store.renames:
            self.store.delete_tree(f"trash/{dataset_id}")
        else:
            self.store.delete_tree(self._key(dataset_id))
            self.store.delete(f"trash/{dataset_id}")

    def in_trash(self, dataset_id: str) -> bool:
        return dataset_id in self.trash()

    def trash(self) -> list[str]:
        """The datasets put in the trash and not yet purged."""
        return self.store.children("trash")


def _prefixed(metadata: dict[str, Any]) -> dict[str, str]:
    return {METADATA_PREFIX + key: str(value) for key, value in metadata.items() if value is not None}
