"""Decoding a Parquet file's row groups while it downloads, and falling back when that is not safe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.decode import StreamingDecoder, footer_size

CHUNK = 65536


def write_file(path: Path, rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "episode_id": pa.array(np.arange(rows) // 100, pa.int64()),
            "observation": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=rows * 5).astype(np.float32)), 5),
            "source": pa.array(["logged"] * rows),
        }
    )
    pq.write_table(table, path, row_group_size=rows // 4, use_dictionary=["source"], compression="snappy")
    return path.read_bytes()


@pytest.fixture
def parquet(tmp_path) -> tuple[Path, bytes]:
    path = tmp_path / "four-row-groups.parquet"
    content = write_file(path, 40_000, seed=0)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    return path, content


def feed(decoder: StreamingDecoder, content: bytes, start: int = 0) -> None:
    for offset in range(start, len(content), CHUNK):
        decoder.received(offset, content[offset : offset + CHUNK])


def tail_of(content: bytes) -> bytes:
    return content[-footer_size(content[-8:]) :]


COLUMNS = ["episode_id", "observation", "source"]


def test_rows_come_from_the_streamed_bytes(parquet, tmp_path) -> None:
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), COLUMNS) as decoder:
        feed(decoder, content)
        # No file there: had the decoder fallen back to reading the cache, this would raise.
        table = decoder.table(tmp_path / "not-there.parquet")

    assert table.equals(pq.read_table(path, columns=COLUMNS))


def test_a_footer_that_is_not_the_files_own_is_not_trusted(parquet, tmp_path) -> None:
    path, content = parquet
    other = write_file(tmp_path / "other.parquet", 40_000, seed=1)
    assert len(other) == len(content) and tail_of(other) != tail_of(content)

    with StreamingDecoder(tail_of(other), len(content), COLUMNS) as decoder:
        feed(decoder, content)
        table = decoder.table(path)

    assert table.equals(pq.read_table(path, columns=COLUMNS))


@pytest.mark.parametrize(
    "tail",
    [b"", b"not a parquet footer", b"\x00\x00\x10\x00PAR1"],
    ids=["empty", "garbage", "footer-longer-than-tail"],
)
def test_an_unreadable_footer_falls_back_to_reading_the_file(parquet, tail: bytes) -> None:
    path, content = parquet
    with StreamingDecoder(tail, len(content), COLUMNS) as decoder:
        feed(decoder, content)
        assert decoder.table(path).equals(pq.read_table(path, columns=COLUMNS))


def test_bytes_that_do_not_start_at_the_beginning_fall_back_to_the_file(parquet, tmp_path) -> None:
    """A resumed download shows only the missing end; the beginning is on disk, not in memory."""
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), COLUMNS) as decoder:
        feed(decoder, content, start=CHUNK * 3)
        assert decoder.table(path).equals(pq.read_table(path, columns=COLUMNS))


def test_a_download_cut_short_falls_back_to_the_file(parquet) -> None:
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), COLUMNS) as decoder:
        feed(decoder, content[: len(content) // 2])
        assert decoder.table(path).equals(pq.read_table(path, columns=COLUMNS))
