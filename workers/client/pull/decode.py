"""Reading the service's Parquet files: column chunk by column chunk, and while they download.

A pull is download, verify, decode. With the file's footer fetched first (a suffix Range request),
each column chunk can be decoded as soon as its last byte has arrived, so decoding overlaps the
transfer; the rows are handed out only once the whole file's checksum has been verified. Fixed-size
list columns (observations, continuous actions) skip pyarrow's list reader (see `parquet_lists`).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workers.client.pull.cache import aligned_memory
from workers.client.pull.parquet_lists import read_fixed_size_lists

DECODE_THREADS = min(4, os.cpu_count() or 1)


def read_parquet(path: Path, columns: list[str]) -> pa.Table:
    """A whole cached Parquet file."""
    # Cached files are immutable and replaced only by rename, so mapping them is safe, and it spares
    # copying each file through read buffers before decoding.
    with pa.memory_map(str(path)) as mapped:
        image = ParquetImage.of(mapped.read_buffer(), None, columns)
        if image is None:
            return pq.read_table(path, columns=columns, memory_map=True)
        threads = min(DECODE_THREADS, max(len(image.chunks), 1))
        with ThreadPoolExecutor(threads, thread_name_prefix="replaybank-decode") as pool:
            decoded = {chunk: pool.submit(image.read, chunk) for chunk in image.chunks}
            return image.table({chunk: future.result() for chunk, future in decoded.items()})


def footer_size(tail: bytes) -> int | None:
    """How many bytes at the end of a Parquet file hold its footer, from the file's last 8 bytes."""
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        return None
    return int.from_bytes(tail[-8:-4], "little") + 8


@dataclass(frozen=True, order=True)
class ColumnChunk:
    end: int
    """The file offset just past the chunk's last byte: it can be decoded once the file is there up to here."""
    group: int
    column: str


class ParquetImage:
    """A Parquet file in memory, read one column chunk at a time (on any thread)."""

    def __init__(self, file: pa.Buffer, metadata: pq.FileMetaData, columns: list[str]) -> None:
        self._file = file
        self._metadata = metadata
        self._schema = metadata.schema.to_arrow_schema()
        self._types = {name: self._schema.field(name).type for name in columns}
        self._columns = columns
        leaves: dict[str, list[int]] = {}
        for index in range(metadata.num_columns):
            leaves.setdefault(metadata.schema.column(index).path.split(".")[0], []).append(index)
        self._leaves = {name: leaves[name] for name in columns}
        self.chunks = sorted(
            ColumnChunk(max(_chunk_end(metadata.row_group(group).column(leaf)) for leaf in self._leaves[name]), group, name)
            for group in range(metadata.num_row_groups)
            for name in columns
        )

    @classmethod
    def of(cls, file: pa.Buffer, metadata: pq.FileMetaData | None, columns: list[str]) -> ParquetImage | None:
        """The image, or None when the file lacks a column or its footer cannot be read (pyarrow says why)."""
        try:
            if metadata is None:
                metadata = pq.read_metadata(pa.BufferReader(file))
            return cls(file, metadata, columns)
        except (KeyError, pa.ArrowException, OSError):
            return None

    def read(self, chunk: ColumnChunk) -> pa.ChunkedArray:
        list_type = self._types[chunk.column]
        leaves = self._leaves[chunk.column]
        if pa.types.is_fixed_size_list(list_type) and len(leaves) == 1:
            group = self._metadata.row_group(chunk.group)
            lists = read_fixed_size_lists(
                self._file, group.column(leaves[0]), self._metadata.schema.column(leaves[0]), list_type, group.num_rows
            )
            if lists is not None:
                return lists
        # A reader of its own per call, so that the decoding threads share no reader state.
        reader = pq.ParquetFile(pa.BufferReader(self._file), metadata=self._metadata)
        return reader.read_row_group(chunk.group, columns=[chunk.column], use_threads=False).column(0)

    def table(self, decoded: dict[ColumnChunk, pa.ChunkedArray]) -> pa.Table:
        """The file's rows from every chunk's `read`."""
        by_column: dict[str, list[pa.Array]] = {name: [] for name in self._columns}
        for chunk in sorted(decoded, key=lambda chunk: chunk.group):
            by_column[chunk.column].extend(decoded[chunk].chunks)
        schema = pa.schema([self._schema.field(name) for name in self._columns])
        return pa.table([pa.chunked_array(by_column[name], self._types[name]) for name in self._columns], schema=schema)


def _chunk_end(column: pq.ColumnChunkMetaData) -> int:
    start = column.data_page_offset
    if column.has_dictionary_page and column.dictionary_page_offset:
        start = min(start, column.dictionary_page_offset)
    return start + column.total_compressed_size


class StreamingDecoder:
    """Decodes a Parquet file's column chunks while the file downloads into the decoder's `memory`.

    `memory` is None when streaming is not possible (an unreadable footer, a missing column); the
    download then goes to the cache alone. `filled(end)`, on the download's thread, queues every chunk
    whose bytes are all there; a few threads decode them in file order. `table` returns them once the
    download has been verified, or reads the cached file the plain way when the bytes did not all
    arrive in memory (`abandon`, for a retried download) or the footer is not the file's own.
    """

    def __init__(self, tail: bytes, size: int, columns: list[str]) -> None:
        self._tail = tail
        self._size = size
        self._columns = columns
        self._filled = 0
        self._decoded: dict[ColumnChunk, Future[pa.ChunkedArray]] = {}
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="replaybank-decode")
        self.memory: memoryview | None = None
        self._image: ParquetImage | None = None
        metadata = _footer_metadata(tail)
        if metadata is not None:
            # Uninitialised: every byte is written by the download before it is read.
            memory = aligned_memory(size)
            image = ParquetImage.of(pa.py_buffer(memory), metadata, columns)
            if image is not None and all(chunk.end <= size for chunk in image.chunks):
                self.memory, self._image = memory, image
        self._pending = deque(self._image.chunks if self._image is not None else [])

    def __enter__(self) -> StreamingDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def filled(self, end: int) -> None:
        """Bytes [0, end) of the file are in `memory`."""
        if self._image is None:
            return
        if end < self._filled:  # the download started over: what was decoded may not be the file's
            self.abandon()
            return
        self._filled = end
        while self._pending and self._pending[0].end <= end:
            chunk = self._pending.popleft()
            self._decoded[chunk] = self._pool.submit(self._image.read, chunk)

    def abandon(self) -> None:
        """The download goes on elsewhere than `memory`: `table` will read the cached file."""
        self._image = None

    def table(self, cached: Path) -> pa.Table:
        """The file's rows; call only once the download into `cached` has been verified."""
        # The footer came by a separate request: decode by it only if it is the verified file's own.
        complete = self._image is not None and self._filled == self._size and not self._pending
        if not complete or self.memory is None or self.memory[self._size - len(self._tail) :] != self._tail:
            return read_parquet(cached, self._columns)
        return self._image.table({chunk: future.result() for chunk, future in self._decoded.items()})


def _footer_metadata(tail: bytes) -> pq.FileMetaData | None:
    """The metadata in a file's separately fetched end, if it holds a whole readable footer."""
    needed = footer_size(tail)
    if needed is None or needed > len(tail):
        return None
    try:
        return pq.read_metadata(pa.BufferReader(tail))
    except (pa.ArrowException, OSError):
        return None
