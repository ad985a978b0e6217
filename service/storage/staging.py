"""One new data file, written from parts while an upload (or a compaction) is still producing them.

Encoding Parquet is the longest single piece of an upload. It runs on a thread of its own (Arrow's writer
releases the GIL), one row group at a time, while the caller checks and measures the next parts: an upload
then costs about the encoding plus the last row group's, not the encoding plus everything else.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.storage.stores import StoredFileWriter

ROW_GROUP_ROWS = 1 << 17
"""Rows per row group: large enough for fast scans (DuckDB's own default is 122,880), small enough that the
row group still to encode after an upload's last byte arrives is short."""
GROUPS_AHEAD = 2
"""Row groups handed to the encoding thread and not yet written, at most: bounds the memory an upload holds."""
STATS_COLUMNS = ("episode_id", "step", "reward")


@dataclass(frozen=True)
class StagedFile:
    path: str
    size: int
    sha256: str
    rows: int
    stats: str
    """Delta add-action statistics (JSON): row count, and min/max of the scalar columns."""


class StagingWriter:
    """Writes one data file from parts, hashing the bytes as they go out.

    Parts are gathered into row groups of about ROW_GROUP_ROWS rows, each encoded on the writer's own
    thread, in order. Float vectors rarely repeat, so only the string columns are dictionary-encoded, and
    statistics are kept only for the scalar columns. An encoding error surfaces at the next `write` or at
    `close`.
    """

    def __init__(self, raw: StoredFileWriter, relative: str) -> None:
        self.relative = relative
        self._raw = raw
        self._sink = _HashingFile(self._raw)
        self._writer: pq.ParquetWriter | None = None
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replaybank-encode")
        self._encoding: deque[Future[None]] = deque()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._rows = 0
        self._bounds: dict[str, tuple[Any, Any]] = {}

    def write(self, part: pa.Table) -> None:
        self._pending.append(part)
        self._pending_rows += part.num_rows
        self._rows += part.num_rows
        for name in STATS_COLUMNS:
            bounds = pc.min_max(part.column(name))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if name in self._bounds:
                low, high = min(low, self._bounds[name][0]), max(high, self._bounds[name][1])
            self._bounds[name] = (low, high)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the pending parts to the encoding thread as a row group, or as several of ROW_GROUP_ROWS rows
        when they hold twice that or more (a whole upload staged at once); first wait while too many are queued."""
        if not self._pending:
            return
        pending = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        size = pending.num_rows if pending.num_rows < 2 * ROW_GROUP_ROWS else ROW_GROUP_ROWS
        for start in range(0, pending.num_rows, size):
            while len(self._encoding) >= GROUPS_AHEAD or (self._encoding and self._encoding[0].done()):
                self._encoding.popleft().result()
            self._encoding.append(self._encoder.submit(self._encode, pending.slice(start, size)))

    def _encode(self, group: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                pa.PythonFile(self._sink, mode="w"),
                group.schema,
                use_dictionary=["source", "batch_id"],
                write_statistics=list(STATS_COLUMNS) + ["terminal", "truncated"],
                compression="snappy",
            )
        self._writer.write_table(group, row_group_size=max(group.num_rows, 1))

    def close(self) -> StagedFile:
        try:
            self._hand_over()
            while self._encoding:
                self._encoding.popleft().result()
        finally:
            self._encoder.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
        self._raw.close()
        stats = {
            "numRecords": self._rows,
            "minValues": {name: bounds[0] for name, bounds in self._bounds.items()},
            "maxValues": {name: bounds[1] for name, bounds in self._bounds.items()},
            "nullCount": {name: 0 for name in self._bounds},
        }
        return StagedFile(path=self.relative, size=self._sink.size, sha256=self._sink.digest.hexdigest(), rows=self._rows, stats=json.dumps(stats))

    def abort(self) -> None:
        """Drop the file (a failed or refused upload)."""
        for encoding in self._encoding:
            encoding.cancel()
        self._encoder.shutdown(wait=True)
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # the file is deleted anyway; a half-written footer does not matter
            pass
        self._raw.abort()


class _HashingFile:
    """A write-only file that hashes and counts what passes through it to the real file."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.raw.write(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
