"""Fixed-size lists read from the pages themselves: the same values as pyarrow, or None and pyarrow reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.storage.staging import StagingWriter
from service.storage.stores import LocalStore
from workers.client.pull.parquet_lists import read_fixed_size_lists

ROWS = 5_000


def lists(value_type: pa.DataType, size: int, rows: int = ROWS, seed: int = 0) -> pa.FixedSizeListArray:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=rows * size) * 1000).astype(value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(pa.array(values, value_type), size)


def read_all(path: Path, column: str = "x") -> tuple[pa.ChunkedArray | None, pa.ChunkedArray]:
    """Every row group's lists through `read_fixed_size_lists` (None if any group refused), and pyarrow's."""
    file = pa.py_buffer(path.read_bytes())
    metadata = pq.read_metadata(path)
    list_type = metadata.schema.to_arrow_schema().field(column).type
    leaf = next(i for i in range(metadata.num_columns) if metadata.schema.column(i).path.split(".")[0] == column)
    parts = []
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        part = read_fixed_size_lists(file, row_group.column(leaf), metadata.schema.column(leaf), list_type, row_group.num_rows)
        if part is None:
            return None, pq.read_table(path, columns=[column]).column(0)
        parts.extend(part.chunks)
    return pa.chunked_array(parts, list_type), pq.read_table(path, columns=[column]).column(0)


@pytest.mark.parametrize("compression", ["none", "snappy", "gzip", "zstd", "brotli"])
@pytest.mark.parametrize("page_version", ["1.0", "2.0"])
def test_every_codec_and_page_version_reads_as_pyarrow_does(tmp_path, compression: str, page_version: str) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table({"x": lists(pa.float32(), 11)}),
        path,
        compression=compression,
        data_page_version=page_version,
        data_page_size=16 << 10,  # many pages per chunk
        row_group_size=ROWS // 3,
        use_dictionary=False,
    )
    ours, pyarrows = read_all(path)
    assert ours is not None and ours.equals(pyarrows)


@pytest.mark.parametrize("value_type", [pa.float32(), pa.float64(), pa.int32(), pa.int64()], ids=str)
@pytest.mark.parametrize("size", [1, 3, 17])
def test_value_types_and_list_sizes(tmp_path, value_type: pa.DataType, size: int) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": lists(value_type, size)}), path, use_dictionary=False, data_page_size=7000)
    ours, pyarrows = read_all(path)
    assert ours is not None and ours.equals(pyarrows)


def test_lz4_whose_name_in_the_metadata_does_not_say_which_framing_is_left_to_pyarrow(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": lists(pa.float32(), 11)}), path, compression="lz4", use_dictionary=False)
    assert pq.read_metadata(path).row_group(0).column(0).compression == "LZ4"
    ours, pyarrows = read_all(path)
    assert ours is None and len(pyarrows) == ROWS


def test_statistics_and_page_checksums_in_the_headers_are_stepped_over(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(
        pa.table({"x": lists(pa.float32(), 4)}),
        path,
        use_dictionary=False,
        write_statistics=True,
        write_page_checksum=True,
        data_page_size=4096,
    )
    ours, pyarrows = read_all(path)
    assert ours is not None and ours.equals(pyarrows)


def test_the_services_own_files_take_the_fast_path(tmp_path) -> None:
    rows = 70_000  # written in batches, as uploads are
    table = pa.table(
        {
            "episode_id": pa.array(np.arange(rows) // 1000, pa.int64()),
            "step": pa.array(np.arange(rows) % 1000, pa.int32()),
            "reward": pa.array(np.zeros(rows), pa.float32()),
            "observation": lists(pa.float32(), 11, rows),
            "action": lists(pa.float32(), 3, rows, seed=1),
            "source": pa.array(["logged"] * rows),
        }
    )
    writer = StagingWriter(LocalStore(tmp_path).writer("part.parquet"), "part.parquet")
    for batch in table.to_batches(max_chunksize=20_000):
        writer.write(pa.Table.from_batches([batch]))
    writer.close()
    for column in ("observation", "action"):
        ours, pyarrows = read_all(tmp_path / "part.parquet", column)
        assert ours is not None and ours.equals(pyarrows)


def refused(tmp_path: Path, column: pa.Array, **options) -> bool:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": column}), path, **options)
    ours, pyarrows = read_all(path)
    return ours is None and len(pyarrows) == len(column)


def test_what_is_not_plain_is_left_to_pyarrow(tmp_path) -> None:
    values = lists(pa.float32(), 3)
    with_null_values = pa.FixedSizeListArray.from_arrays(pa.array([1.0, None, 3.0] * 10, pa.float32()), 3)
    with_null_lists = pa.FixedSizeListArray.from_arrays(
        pa.array([1.0, 2.0, 3.0] * 10, pa.float32()), 3, mask=pa.array([False, True] * 5)
    )
    assert refused(tmp_path, values, use_dictionary=True)  # dictionary-encoded pages
    assert refused(tmp_path, values, use_dictionary=False, column_encoding={"x.list.element": "BYTE_STREAM_SPLIT"})
    assert refused(tmp_path, with_null_values, use_dictionary=False)
    assert refused(tmp_path, with_null_lists, use_dictionary=False)


def first_chunk_reader(path: Path, content: bytes | None = None):
    """`read_fixed_size_lists` on the first column chunk of a one-column file, given a list type and rows."""
    metadata = pq.read_metadata(path)
    file = pa.py_buffer(content if content is not None else path.read_bytes())
    chunk, column = metadata.row_group(0).column(0), metadata.schema.column(0)
    return lambda list_type, rows: read_fixed_size_lists(file, chunk, column, list_type, rows)


def test_a_variable_list_column_is_not_taken_for_a_fixed_one(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32()))}), path)
    read = first_chunk_reader(path)
    assert read(pa.list_(pa.float32()), 2) is None
    # Nor a fixed type laid over lists whose values do not add up to it.
    assert read(pa.list_(pa.float32(), 3), 2) is None


def test_pages_that_end_inside_a_list_are_refused(tmp_path) -> None:
    """Lists of 6 laid over a file of 3-lists: the values add up (2,500 x 6), but pages end mid-list."""
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": lists(pa.float32(), 3)}), path, use_dictionary=False, data_page_size=1000)
    read = first_chunk_reader(path)
    threes = read(pa.list_(pa.float32(), 3), ROWS)
    assert threes is not None and any(len(page) % 2 for page in threes.chunks)
    assert read(pa.list_(pa.float32(), 6), ROWS // 2) is None


def test_a_corrupt_page_header_is_refused_not_misread(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": lists(pa.float32(), 3)}), path, use_dictionary=False, compression="snappy")
    content = path.read_bytes()
    start = pq.read_metadata(path).row_group(0).column(0).data_page_offset
    for damage in (b"\xff" * 8, b"\x00" * 8, b"\x15\x02\x15\x7f"):
        broken = content[:start] + damage + content[start + len(damage) :]
        assert first_chunk_reader(path, broken)(pa.list_(pa.float32(), 3), ROWS) is None
