"""Compaction: many small appends (online collection) are merged in the background by Delta commits of their
own. A compaction commit holds no user version, so version numbers and every version's file manifest stay as
they were; only later versions list the merged files.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from schemas.transition import transition_schema
from service.catalog.tables import FileRow
from service.datasets import Datasets, spec_of
from service.recovery import catch_up
from service.settings import Settings
from service.storage.datasets import DataFile
from service.storage.staging import StagedFile

log = logging.getLogger("replaybank.compaction")


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


class Compaction:
    """Runs `compact` on one background thread, one dataset at a time, whenever an append asks (`schedule`)."""

    def __init__(self, datasets: Datasets, policy: CompactionPolicy | None = None) -> None:
        self.datasets = datasets
        self.catalog = datasets.catalog
        self.storage = datasets.storage
        self.policy = policy or CompactionPolicy()
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replaybank-compaction")
        self._guard = threading.Lock()
        self._compacting: set[str] = set()
        """Datasets with a compaction queued or running (guarded by _guard): one at a time each."""

    def close(self) -> None:
        # A queued compaction can wait for the next start; one already running finishes its commit or discards.
        self._work.shutdown(wait=True, cancel_futures=True)

    def schedule(self, dataset_id: str) -> None:
        """Queue a compaction check for the dataset unless one is already queued or running; never waits."""
        with self._guard:
            if dataset_id in self._compacting:
                return
            self._compacting.add(dataset_id)
        try:
            self._work.submit(self._compact_in_background, dataset_id)
        except RuntimeError:  # shutting down: the next append after a restart checks again
            with self._guard:
                self._compacting.discard(dataset_id)

    def _compact_in_background(self, dataset_id: str) -> None:
        try:
            self.compact(dataset_id)
        except Exception:
            # Nothing is committed unless the whole swap is: every version stays readable as it was.
            log.exception("dataset %s: compaction failed; its files stay as they are", dataset_id)
        finally:
            with self._guard:
                self._compacting.discard(dataset_id)

    def compact(self, dataset_id: str) -> int:
        """Merge runs of small files of the latest Delta version in one commit of their own; returns the number
        of files merged away. One replica of a deployment compacts a dataset at a time: while another does,
        this returns 0 at once."""
        with self.datasets.locks.try_hold(f"compaction:{dataset_id}") as held:
            return self._compact(dataset_id) if held else 0

    def _compact(self, dataset_id: str) -> int:
        """The merged files are written outside the commit lock (appends go on meanwhile); the commit is
        serialised with appends and leaves every earlier Delta version, so every user version's manifest,
        untouched."""
        with self.datasets.lock(dataset_id):
            dataset = self.catalog.dataset_by_id(dataset_id)
            if dataset is None or not self.storage.exists(dataset_id):
                return 0
            catch_up(self.datasets, dataset_id)
            delta_version = self.storage.latest_delta_version(dataset_id)
        files = self.datasets.ordered_files(dataset, delta_version, dataset.latest_version)
        runs = self.policy.runs(files)
        if not runs:
            return 0
        schema = transition_schema(spec_of(dataset))
        staged: list[tuple[list[FileRow], StagedFile]] = []
        committed = False
        try:
            for run in runs:
                staged.append((run, self.storage.merge(dataset_id, [file.path for file in run], schema)))
            with self.datasets.lock(dataset_id):
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
