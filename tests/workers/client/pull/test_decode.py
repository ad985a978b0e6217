"""Decoding a Parquet file's column chunks while it downloads, and falling back when that is not safe."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.client.pull.decode import StreamingDecoder, footer_size, read_parquet

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


def feed(decoder: StreamingDecoder, content: bytes) -> None:
    """As the cache does: the bytes land in the decoder's memory, then it hears how far they reach."""
    if decoder.memory is None:
        return
    for offset in range(0, len(content), CHUNK):
        end = min(offset + CHUNK, len(content))
        decoder.memory[offset:end] = content[offset:end]
        decoder.filled(end)


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


def test_a_download_cut_short_falls_back_to_the_file(parquet) -> None:
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), COLUMNS) as decoder:
        feed(decoder, content[: len(content) // 2])
        assert decoder.table(path).equals(pq.read_table(path, columns=COLUMNS))


def test_an_abandoned_stream_reads_the_file(parquet) -> None:
    """A retried download goes on in the cache alone; what reached memory before is not used."""
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), COLUMNS) as decoder:
        feed(decoder, content)
        decoder.memory[: len(content) // 2] = bytes(len(content) // 2)  # had it been read from memory: garbage
        decoder.abandon()
        assert decoder.table(path).equals(pq.read_table(path, columns=COLUMNS))


def test_a_download_that_starts_over_falls_back_to_the_file(parquet) -> None:
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), COLUMNS) as decoder:
        feed(decoder, content[: len(content) // 2])
        decoder.filled(CHUNK)
        feed(decoder, content)
        assert decoder.table(path).equals(pq.read_table(path, columns=COLUMNS))


def test_a_file_without_a_requested_column_is_not_streamed(parquet) -> None:
    path, content = parquet
    with StreamingDecoder(tail_of(content), len(content), [*COLUMNS, "batch_id"]) as decoder:
        assert decoder.memory is None
        with pytest.raises(pa.ArrowInvalid, match="batch_id"):  # pyarrow's own words
            decoder.table(path)


def test_a_cached_file_reads_as_pyarrow_reads_it(parquet) -> None:
    path, _ = parquet
    for columns in (COLUMNS, ["source", "observation"]):
        table = read_parquet(path, columns)
        assert table.equals(pq.read_table(path, columns=columns))


def test_rows_read_from_an_uncompressed_file_outlive_its_mapping(tmp_path) -> None:
    """Uncompressed values are not copied out of the mapped file: the mapping must last as long as they do."""
    source, path = tmp_path / "source.parquet", tmp_path / "plain.parquet"
    write_file(source, 40_000, seed=2)
    pq.write_table(pq.read_table(source), path, compression="none", use_dictionary=False)
    table = read_parquet(path, COLUMNS)
    gc.collect()
    assert table.equals(pq.read_table(path, columns=COLUMNS))
