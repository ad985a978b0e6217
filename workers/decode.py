"""Decoding Parquet files while they download.

A pull is download, verify, decode. With the file's footer fetched first (a suffix Range request),
each row group can be decoded as soon as its last byte has arrived, so decoding overlaps the
transfer; the rows are handed out only once the whole file's checksum has been verified.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet(path: Path, columns: list[str]) -> pa.Table:
    """A whole cached Parquet file (the plain way)."""
    # Cached files are immutable and replaced only by rename, so mapping them is safe, and it spares
    # copying each file through read buffers before decoding.
    return pq.read_table(path, columns=columns, memory_map=True)


def footer_size(tail: bytes) -> int | None:
    """How many bytes at the end of a Parquet file hold its footer, from the file's last 8 bytes."""
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        return None
    return int.from_bytes(tail[-8:-4], "little") + 8


def _row_group_end(group: pq.RowGroupMetaData) -> int:
    """The file offset just past a row group's last column chunk."""
    end = 0
    for index in range(group.num_columns):
        column = group.column(index)
        start = column.data_page_offset
        if column.has_dictionary_page and column.dictionary_page_offset:
            start = min(start, column.dictionary_page_offset)
        end = max(end, start + column.total_compressed_size)
    return end


class StreamingDecoder:
    """Decodes a Parquet file's row groups while the file downloads, from a copy of its bytes in memory.

    `received` (on the cache's writer thread) copies each chunk in and queues every row group whose
    bytes are all there; one thread decodes them in order, Arrow's own pool working inside each.
    `table` returns them after the download has been verified, or reads the cached file the plain
    way when streaming was not possible (a download that restarted elsewhere, an unreadable footer).
    """

    def __init__(self, tail: bytes, size: int, columns: list[str]) -> None:
        self._tail = tail
        self._size = size
        self._columns = columns
        self._received = 0
        self._queued = 0
        self._decoded: list[Future[pa.Table]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="replaybank-decode")
        needed = footer_size(tail)
        metadata = None
        if needed is not None and needed <= len(tail):
            try:
                metadata = pq.read_metadata(pa.BufferReader(tail))
            except (pa.ArrowException, OSError):
                pass
        groups = [] if metadata is None else [metadata.row_group(index) for index in range(metadata.num_row_groups)]
        self._ends = [_row_group_end(group) for group in groups]
        self._streaming = bool(self._ends) and max(self._ends) <= size
        if self._streaming:
            # Uninitialised (no zero fill): every byte is written by `received` before it is read.
            self._image = pa.allocate_buffer(size)
            self._view = memoryview(self._image).cast("B")
            self._file = pq.ParquetFile(pa.BufferReader(self._image), metadata=metadata)

    def __enter__(self) -> "StreamingDecoder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def received(self, offset: int, chunk: bytes) -> None:
        if not self._streaming:
            return
        if offset != self._received:  # the source started over or skipped ahead: not in memory in order
            self._streaming = False
            return
        end = offset + len(chunk)
        self._view[offset:end] = chunk
        self._received = end
        while self._queued < len(self._ends) and self._ends[self._queued] <= end:
            self._decoded.append(self._pool.submit(self._file.read_row_group, self._queued, columns=self._columns))
            self._queued += 1

    def table(self, cached: Path) -> pa.Table:
        """The file's rows; call only once the download into `cached` has been verified."""
        # The footer came by a separate request: decode by it only if it is the verified file's own.
        verified_tail = self._streaming and self._received == self._size and (
            self._view[self._size - len(self._tail) :] == self._tail
        )
        if not verified_tail or self._queued < len(self._ends):
            return read_parquet(cached, self._columns)
        tables = [decoded.result() for decoded in self._decoded]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
