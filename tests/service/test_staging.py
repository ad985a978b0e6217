"""The staging writer: parts become one Parquet file, encoded a row group at a time on a thread of its own."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.storage import staging
from service.storage.staging import StagingWriter
from service.storage.stores import LocalStore, StoredFileWriter


def part(first_row: int, rows: int) -> pa.Table:
    index = np.arange(first_row, first_row + rows)
    return pa.table(
        {
            "episode_id": pa.array(index // 100, pa.int64()),
            "step": pa.array(index % 100, pa.int32()),
            "reward": pa.array(index * 0.5, pa.float32()),
            "observation": pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(index, 3), pa.float32()), 3),
            "source": pa.array(["logged"] * rows),
        }
    )


def test_parts_become_row_groups_of_one_file_in_order_with_its_checksum_and_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "ROW_GROUP_ROWS", 250)
    writer = StagingWriter(LocalStore(tmp_path).writer("part.parquet"), "part.parquet")
    for first in range(0, 1_000, 100):
        writer.write(part(first, 100))
    writer.write(part(1_000, 30))
    staged = writer.close()

    data = (tmp_path / "part.parquet").read_bytes()
    assert staged.size == len(data) and staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.rows == 1_030
    # Three parts make a row group (300 rows >= 250); the last holds what was left at close.
    assert [group.num_rows for group in (pq.ParquetFile(tmp_path / "part.parquet").metadata.row_group(i) for i in range(4))] == [300, 300, 300, 130]
    assert pq.read_table(tmp_path / "part.parquet").equals(part(0, 1_030))
    stats = json.loads(staged.stats)
    assert stats["numRecords"] == 1_030
    assert stats["minValues"] == {"episode_id": 0, "step": 0, "reward": 0.0}
    assert stats["maxValues"] == {"episode_id": 10, "step": 99, "reward": 514.5}


def test_a_whole_upload_written_at_once_is_cut_into_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "ROW_GROUP_ROWS", 250)
    writer = StagingWriter(LocalStore(tmp_path).writer("part.parquet"), "part.parquet")
    writer.write(part(0, 1_100))
    assert writer.close().rows == 1_100
    metadata = pq.ParquetFile(tmp_path / "part.parquet").metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [250, 250, 250, 250, 100]
    assert pq.read_table(tmp_path / "part.parquet").equals(part(0, 1_100))


def test_an_encoding_failure_surfaces_and_abort_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "ROW_GROUP_ROWS", 100)
    writer = StagingWriter(LocalStore(tmp_path).writer("part.parquet"), "part.parquet")
    writer.write(part(0, 100))
    # A row group whose schema differs from the file's fails on the encoding thread, not in `write`.
    writer.write(part(100, 100).drop_columns(["source"]))
    with pytest.raises(ValueError, match="schema"):
        writer.close()
    writer.abort()
    assert not (tmp_path / "part.parquet").exists()


class BlockedStream:
    """A file whose writes wait until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writing = threading.Event()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.writing.set()
        self.release.wait()
        self.size += len(data)
        return len(data)


def test_a_slow_sink_holds_back_the_caller_after_a_few_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "ROW_GROUP_ROWS", 100)
    stream = BlockedStream()
    writer = StagingWriter(StoredFileWriter(stream, finish=lambda: None, abandon=lambda: None), "part.parquet")
    handed = []
    finished = threading.Event()

    def produce() -> None:
        for index in range(staging.GROUPS_AHEAD + 2):
            writer.write(part(index * 100, 100))
            handed.append(index)
        finished.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert stream.writing.wait(timeout=10)
    # One group is being written and GROUPS_AHEAD - 1 wait behind it: the next hand-over blocks.
    assert not finished.wait(timeout=0.5)
    assert len(handed) == staging.GROUPS_AHEAD
    stream.release.set()
    assert finished.wait(timeout=10)
    producer.join()
    staged = writer.close()
    assert staged.rows == (staging.GROUPS_AHEAD + 2) * 100 and staged.size == stream.size > 0
