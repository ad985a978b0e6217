"""Fixed-size lists straight from the pages of a Parquet column chunk.

Observations and continuous actions are fixed-size lists of floats. Parquet keeps a list column as its
values plus a repetition and a definition level for every value, and pyarrow's reader rebuilds the list
structure from those levels: of the 0.33 CPU-seconds it took to read a Hopper-shaped 92 MB file, 0.23 s
went to its three list columns, against 0.09 s for decompressing their pages. When every list holds its
full size of values, the levels say nothing the Arrow type does not already say, so this reader takes
each page's PLAIN values as they are and lays the list type over them.

It reads what the service's writer produces (data pages v1 and v2, PLAIN values, no nulls, any codec
Arrow has) and answers None for anything else, which the caller then reads with pyarrow. It checks that
every level has its value (so no list is null or short of values) and that the values add up to the
row count times the list size; it takes the lists to be of equal length, as they are in any file
written from a fixed-size-list column.
"""

from __future__ import annotations

import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd", "LZ4_RAW": "lz4_raw"}
"""Parquet's codec names for the codecs whose format Arrow's `Codec` reads as Parquet writes it."""

PHYSICAL_TYPES = {pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.int32(): "INT32", pa.int64(): "INT64"}
"""Value types taken as they are stored (little-endian, PLAIN)."""

_PLAIN = 0
_RLE = 3
_DATA_PAGE = 0
_DATA_PAGE_V2 = 3


def read_fixed_size_lists(
    file: pa.Buffer,
    chunk: pq.ColumnChunkMetaData,
    column: pq.ColumnSchema,
    list_type: pa.DataType,
    rows: int,
) -> pa.ChunkedArray | None:
    """The `rows` lists of one column chunk of `file` (the whole file in memory), or None if it is not plain."""
    if sys.byteorder != "little" or not pa.types.is_fixed_size_list(list_type):
        return None  # PLAIN values are little-endian, Arrow's arrays in the machine's order
    value_type = list_type.value_type
    if (
        PHYSICAL_TYPES.get(value_type) != chunk.physical_type
        or column.max_repetition_level != 1
        or chunk.has_dictionary_page
        or (chunk.compression != "UNCOMPRESSED" and chunk.compression not in CODECS)
    ):
        return None
    codec = None
    if chunk.compression != "UNCOMPRESSED":
        if not pa.Codec.is_available(CODECS[chunk.compression]):
            return None
        codec = pa.Codec(CODECS[chunk.compression])
    has_definition_levels = column.max_definition_level > 0
    item_size = value_type.bit_width // 8
    header_bytes = memoryview(file).cast("B")
    position = chunk.data_page_offset
    end = position + chunk.total_compressed_size
    if end > file.size:
        return None
    pages: list[pa.Buffer] = []
    values = 0
    try:
        while position < end:
            header, body_start = _read_struct(header_bytes, position)
            page = _page_values(file, header, body_start, codec, has_definition_levels)
            position = body_start + header.get(3, -1)
            if page is None or position > end:
                return None
            page_values, count = page
            if page_values.size != count * item_size:  # a null or an empty list: the values fall short
                return None
            pages.append(page_values)
            values += count
    except (IndexError, ValueError, KeyError, TypeError, OSError, pa.ArrowException):
        return None  # a header we cannot follow; pyarrow will either read it or say what is wrong
    if values != rows * list_type.list_size or values != chunk.num_values:
        return None
    if any(page.size // item_size % list_type.list_size for page in pages):
        return None  # a page that ends inside a list (Arrow's writer never splits one, other writers may)
    flat = [pa.Array.from_buffers(value_type, page.size // item_size, [None, page]) for page in pages]
    return pa.chunked_array([pa.FixedSizeListArray.from_arrays(part, type=list_type) for part in flat], list_type)


def _page_values(
    file: pa.Buffer, header: dict[int, Any], body_start: int, codec: pa.Codec | None, has_definition_levels: bool
) -> tuple[pa.Buffer, int] | None:
    """A data page's PLAIN values and its count of levels; None for any other page or encoding."""
    kind, uncompressed, compressed = header.get(1), header.get(2), header.get(3)
    if not isinstance(uncompressed, int) or not isinstance(compressed, int) or compressed < 0:
        return None
    body = file.slice(body_start, compressed)
    if body.size != compressed:
        return None
    if kind == _DATA_PAGE:
        page_header = header.get(5)
        if not isinstance(page_header, dict) or page_header.get(2) != _PLAIN:
            return None
        if page_header.get(4) != _RLE or (has_definition_levels and page_header.get(3) != _RLE):
            return None
        page = codec.decompress(body, decompressed_size=uncompressed) if codec is not None else body
        # Repetition, then definition levels, each RLE-encoded behind its 4-byte length.
        offset = 0
        for _ in range(1 + has_definition_levels):
            offset += 4 + int.from_bytes(page.slice(offset, 4).to_pybytes(), "little")
        if offset > page.size:
            return None
        return page.slice(offset), page_header[1]
    if kind == _DATA_PAGE_V2:
        page_header = header.get(8)
        if not isinstance(page_header, dict) or page_header.get(4) != _PLAIN or page_header.get(2, 0) != 0:
            return None
        levels = page_header.get(5, 0) + page_header.get(6, 0)
        values = body.slice(levels)
        if page_header.get(7, True) and codec is not None:
            values = codec.decompress(values, decompressed_size=uncompressed - levels)
        return values, page_header[1]
    return None


# Thrift's compact protocol, as far as page headers need it: integers, booleans and structs are kept,
# everything else (statistics' binary values, lists) is stepped over.


def _read_varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _read_struct(data: memoryview, position: int) -> tuple[dict[int, Any], int]:
    fields: dict[int, Any] = {}
    field_id = 0
    while True:
        header = data[position]
        position += 1
        if header == 0:
            return fields, position
        delta, kind = header >> 4, header & 0x0F
        if delta:
            field_id += delta
        else:
            raw, position = _read_varint(data, position)
            field_id = _zigzag(raw)
        fields[field_id], position = _read_value(data, position, kind)


def _read_value(data: memoryview, position: int, kind: int) -> tuple[Any, int]:
    if kind in (1, 2):  # booleans carry their value in the type
        return kind == 1, position
    if kind == 3:
        return data[position], position + 1
    if kind in (4, 5, 6):
        raw, position = _read_varint(data, position)
        return _zigzag(raw), position
    if kind == 7:
        return None, position + 8
    if kind == 8:
        length, position = _read_varint(data, position)
        return None, position + length
    if kind in (9, 10):
        header = data[position]
        position += 1
        count, element = header >> 4, header & 0x0F
        if count == 15:
            count, position = _read_varint(data, position)
        for _ in range(count):
            _, position = _read_value(data, position, element)
        return None, position
    if kind == 11:
        count, position = _read_varint(data, position)
        if count:
            types = data[position]
            position += 1
            for _ in range(count):
                _, position = _read_value(data, position, types >> 4)
                _, position = _read_value(data, position, types & 0x0F)
        return None, position
    if kind == 12:
        return _read_struct(data, position)
    raise ValueError(f"unknown Thrift compact type {kind}")
