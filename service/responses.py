"""How data leaves the service: a version's rows as an Arrow IPC stream or Parquet (serialised batch by batch
while they are sent), a query's result as Arrow or JSON, the check of a version file's Range header, and stored files (from the
local disk, or streamed from object storage)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from schemas.dataset import QueryColumn, QueryRequest, QueryResult
from schemas.http import ARROW_STREAM, JSON, PARQUET, ROWS_HEADER, TOTAL_ROWS_HEADER, TRUNCATED_HEADER, VERSION_HEADER
from service.datasets import Datasets
from service.errors import ApiError
from service.query import QueryRunner, json_rows
from service.storage.stores import Store, StoredFile


@dataclass(frozen=True)
class Answer:
    """A body (whole, or chunks to stream), its media type and headers; the route wraps it in a response."""

    body: bytes | Iterator[bytes]
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


class _Chunks:
    """A write-only file collecting what Arrow writes, handed out piece by piece while streaming."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _arrow_stream(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    chunks = _Chunks()
    with pa.ipc.new_stream(pa.PythonFile(chunks, mode="w"), schema) as writer:
        yield chunks.take()
        for batch in batches:
            writer.write_batch(batch)
            yield chunks.take()
    yield chunks.take()


def _parquet_stream(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    chunks = _Chunks()
    with pq.ParquetWriter(pa.PythonFile(chunks, mode="w"), schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            yield chunks.take()
    yield chunks.take()


def _arrow_bytes(table: pa.Table) -> bytes:
    chunks = _Chunks()
    with pa.ipc.new_stream(pa.PythonFile(chunks, mode="w"), table.schema) as writer:
        writer.write_table(table)
    return chunks.take()


def version_rows(datasets: Datasets, name: str, reference: str, accept: str | None) -> Answer:
    """A whole version in manifest order: Parquet when `accept` asks for it, else an Arrow IPC stream."""
    pinned, schema, batches = datasets.snapshot(name, reference)
    headers = {VERSION_HEADER: str(pinned.version), ROWS_HEADER: str(pinned.rows)}
    if PARQUET in (accept or ""):
        return Answer(_parquet_stream(schema, batches), PARQUET, headers)
    return Answer(_arrow_stream(schema, batches), ARROW_STREAM, headers)


def query_answer(datasets: Datasets, queries: QueryRunner, name: str, request: QueryRequest, accept: str | None) -> Answer:
    """The SQL's result on the pinned version: an Arrow IPC stream when `accept` asks for it, else JSON."""
    pinned, _schema, rows = datasets.pinned(name, str(request.version))
    result = queries.run(request.sql, rows, request.max_rows)
    headers = {VERSION_HEADER: str(pinned.version), TRUNCATED_HEADER: str(result.truncated).lower()}
    if result.total_rows is not None:
        headers[TOTAL_ROWS_HEADER] = str(result.total_rows)
    if ARROW_STREAM in (accept or ""):
        return Answer(_arrow_bytes(result.table), ARROW_STREAM, headers)
    body = QueryResult(
        version=pinned.version,
        columns=[QueryColumn(name=column.name, type=str(column.type)) for column in result.table.schema],
        rows=json_rows(result.table),
        row_count=result.table.num_rows,
        truncated=result.truncated,
        total_rows=result.total_rows,
    )
    return Answer(body.model_dump_json().encode(), JSON, headers)


_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def check_range(header: str | None, size: int) -> None:
    """Refuse a malformed or unsatisfiable Range in the error envelope (the file response serves good ones)."""
    if header is None:
        return
    unit, _, specs = header.partition("=")
    problem = unit.strip() != "bytes" or not specs.strip()
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    for spec in specs.split(","):
        match = _RANGE.match(spec)
        if problem or match is None or (not match.group(1) and not match.group(2)):
            raise ApiError(400, "bad_request", f"malformed Range header {header!r}", "Range")
        start, end = match.group(1), match.group(2)
        if start and (int(start) >= size or (end and int(end) < int(start))):
            raise ApiError(416, "range_not_satisfiable", f"Range {header!r} is outside the file's {size} bytes", "Range", headers=unsatisfiable)
        if not start and int(end) == 0:
            raise ApiError(416, "range_not_satisfiable", f"Range {header!r} asks for no bytes", "Range", headers=unsatisfiable)


STORED_CHUNK_BYTES = 1 << 20


def stored_file(
    store: Store,
    file: StoredFile,
    media_type: str,
    headers: dict[str, str] | None = None,
    filename: str | None = None,
    range_header: str | None = None,
    file_response: type[FileResponse] = FileResponse,
    redirect: bool = False,
) -> Response:
    """A stored file as the answer: from the local disk; with `redirect`, a 307 to a presigned URL where the
    store hands those out (the client repeats its Range there); or streamed from object storage honouring
    one byte range (several ranges there get the whole file, as a server may answer). Check the Range first."""
    headers = dict(headers or {})
    local = store.local_path(file.key)
    if local is not None:
        return file_response(local, media_type=media_type, headers=headers, filename=filename)
    location = store.download_url(file.key, media_type, filename) if redirect else None
    if location is not None:
        # the URL expires: nobody may keep the redirect
        return RedirectResponse(location, status_code=307, headers={**headers, "Cache-Control": "no-store"})
    if filename is not None:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    headers["Accept-Ranges"] = "bytes"
    start, end, status = 0, file.size, 200
    spec = _single_range(range_header)
    if spec is not None and file.size > 0:
        first, last = spec
        if first:
            start, end = int(first), min(int(last) + 1, file.size) if last else file.size
        else:
            start, end = max(file.size - int(last), 0), file.size
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
    headers["Content-Length"] = str(end - start)
    return StreamingResponse(_stored_chunks(store, file.key, start, end), status_code=status, media_type=media_type, headers=headers)


def _single_range(header: str | None) -> tuple[str, str] | None:
    if header is None:
        return None
    specs = header.partition("=")[2].split(",")
    match = _RANGE.match(specs[0])
    return (match.group(1), match.group(2)) if len(specs) == 1 and match is not None else None


def _stored_chunks(store: Store, key: str, start: int, end: int) -> Iterator[bytes]:
    with store.open_input(key) as source:
        source.seek(start)
        left = end - start
        while left > 0:
            chunk = source.read(min(STORED_CHUNK_BYTES, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
