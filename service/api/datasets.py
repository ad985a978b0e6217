"""Datasets, their versions, tags, files, snapshots and queries."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from schemas.dataset import (
    AppendResult,
    DatasetCreate,
    DatasetPublic,
    Page,
    QueryColumn,
    QueryRequest,
    QueryResult,
    TAG_PATTERN,
    TagPublic,
    TagSet,
    VersionFiles,
    VersionPublic,
    VersionStats,
)
from service import uploads
from service.datasets import PreparedUpload
from service.api.deps import AdminDep, AuthenticatedDep, ReadDep, ServicesDep, WriteDep, may_append
from service.api.responses import BINARY, JSON_ROWS, PROTECTED, binary_answer, errors, raw_body
from service.errors import ApiError
from service.query import json_rows

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=PROTECTED)

IMMUTABLE = "public, max-age=31536000, immutable"
MAX_IDEMPOTENCY_KEY = 200
Limit = Annotated[int, Query(ge=1, le=1000)]
VersionCursor = Annotated[str | None, Query(pattern=r"^[0-9]+$", description="the `next` of the previous page")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=MAX_IDEMPOTENCY_KEY, pattern=r"^[\x20-\x7e]+$"),
]
SNAPSHOT_HEADERS = {"X-Replaybank-Version": "the version number answered", "X-Replaybank-Rows": "its rows"}


@router.post("", status_code=201, response_model=DatasetPublic, responses=errors(409))
def create_dataset(request: DatasetCreate, services: ServicesDep, _: WriteDep) -> DatasetPublic:
    return services.datasets.create(request)


@router.get("", response_model=Page[DatasetPublic])
def list_datasets(services: ServicesDep, _: ReadDep, limit: Limit = 100, cursor: str | None = None) -> Page[DatasetPublic]:
    return services.datasets.page(limit, cursor)


@router.get("/{name}", response_model=DatasetPublic, responses=errors(404))
def get_dataset(name: str, services: ServicesDep, _: ReadDep) -> DatasetPublic:
    return services.datasets.public(services.datasets.get(name))


@router.delete("/{name}", status_code=204, responses=errors(404, 409))
def delete_dataset(name: str, services: ServicesDep, _: AdminDep) -> Response:
    services.datasets.get(name)
    for guard in services.dataset_delete_guards:
        guard(name)
    services.datasets.delete(name)
    return Response(status_code=204)


@router.post(
    "/{name}/transitions",
    status_code=201,
    response_model=AppendResult,
    responses=errors(404, 409, 415),
    openapi_extra=raw_body(uploads.ARROW_STREAM, uploads.PARQUET, json_schema=JSON_ROWS),
)
async def append_transitions(
    name: str,
    request: Request,
    services: ServicesDep,
    principal: AuthenticatedDep,
    idempotency_key: IdempotencyKey = None,
) -> AppendResult:
    if not await run_in_threadpool(may_append, principal, name, services, request.headers.get("replaybank-lease")):
        raise ApiError(403, "forbidden", f"this token may not append to {name!r}", "Authorization")
    if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY and idempotency_key.isprintable()):
        raise ApiError(422, "invalid", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters", "Idempotency-Key")
    kind = uploads.media_type(request.headers.get("content-type"))
    datasets = services.datasets
    await run_in_threadpool(datasets.get, name)
    # The size limit is enforced by the body-size middleware as the chunks arrive.
    if kind != uploads.PARQUET and not (idempotency_key and await run_in_threadpool(datasets.knows_key, name, idempotency_key)):
        return await _append_streamed(name, kind, request, services, idempotency_key)
    body = bytearray()
    digest = hashlib.sha256()
    async for chunk in request.stream():
        body += chunk
        digest.update(chunk)
    return await run_in_threadpool(datasets.append, name, body, kind, idempotency_key, digest.hexdigest())


async def _append_streamed(name: str, kind: str, request: Request, services: ServicesDep, idempotency_key: str | None) -> AppendResult:
    """Validate and write an Arrow stream or JSON rows while they arrive, then commit: the upload costs about
    the longer of the transfer and the write, not their sum. (Parquet needs its footer first: it is buffered.)"""
    datasets = services.datasets
    pipe = uploads.BodyPipe()

    def prepare() -> PreparedUpload:
        try:
            return datasets.prepare_stream(name, pipe, kind)
        except BaseException:
            pipe.abandon()
            raise

    preparing = asyncio.get_running_loop().run_in_executor(None, prepare)
    digest = hashlib.sha256()
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            await pipe.put(chunk)
    except BaseException:
        pipe.fail()
        try:
            await run_in_threadpool(datasets.discard, await preparing)
        except Exception:  # the reader failed too (its staged file is gone); the body's own error is the answer
            pass
        raise
    pipe.end()
    prepared = await preparing
    return await run_in_threadpool(datasets.commit, name, prepared, idempotency_key, digest.hexdigest())


@router.get("/{name}/versions", response_model=Page[VersionPublic], responses=errors(404))
def list_versions(name: str, services: ServicesDep, _: ReadDep, limit: Limit = 100, cursor: VersionCursor = None) -> Page[VersionPublic]:
    return services.datasets.versions(name, limit, cursor)


@router.get("/{name}/versions/{version}", response_model=VersionStats, responses=errors(404))
def version_stats(name: str, version: str, services: ServicesDep, _: ReadDep) -> VersionStats:
    return services.datasets.stats(name, version)


@router.get("/{name}/tags", response_model=Page[TagPublic], responses=errors(404))
def list_tags(name: str, services: ServicesDep, _: ReadDep) -> Page[TagPublic]:
    row = services.datasets.get(name)
    tags = [TagPublic(name=tag.name, version=tag.version) for tag in services.catalog.tags(row.id)]
    return Page(data=tags, count=len(tags))


@router.put("/{name}/tags/{tag}", response_model=TagPublic, responses=errors(404))
def set_tag(name: str, tag: Annotated[str, Path(json_schema_extra={"pattern": TAG_PATTERN})], request: TagSet, services: ServicesDep, _: WriteDep) -> TagPublic:
    return TagPublic(name=tag, version=services.datasets.set_tag(name, tag, request.version))


@router.delete("/{name}/tags/{tag}", status_code=204, responses=errors(404))
def delete_tag(name: str, tag: str, services: ServicesDep, _: AdminDep) -> Response:
    services.datasets.delete_tag(name, tag)
    return Response(status_code=204)


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


def _wants_parquet(accept: str | None) -> bool:
    return uploads.PARQUET in (accept or "")


@router.get(
    "/{name}/versions/{version}/transitions",
    response_class=StreamingResponse,
    responses={
        **binary_answer("the version's rows; Parquet when Accept asks for it", uploads.ARROW_STREAM, uploads.PARQUET, headers=SNAPSHOT_HEADERS),
        **errors(404),
    },
)
def version_transitions(name: str, version: str, request: Request, services: ServicesDep, _: ReadDep) -> StreamingResponse:
    pinned, schema, batches = services.datasets.snapshot(name, version)
    headers = {"X-Replaybank-Version": str(pinned.version), "X-Replaybank-Rows": str(pinned.rows)}
    if _wants_parquet(request.headers.get("accept")):
        return StreamingResponse(_parquet_stream(schema, batches), media_type=uploads.PARQUET, headers=headers)
    return StreamingResponse(_arrow_stream(schema, batches), media_type=uploads.ARROW_STREAM, headers=headers)


@router.get("/{name}/versions/{version}/files", response_model=VersionFiles, responses=errors(404))
def version_files(name: str, version: str, services: ServicesDep, _: ReadDep) -> VersionFiles:
    pinned, files = services.datasets.manifest(name, version)
    return VersionFiles(version=pinned.version, data=files, count=len(files))


class DataFileResponse(FileResponse):
    # Data files are large and read whole: bigger chunks mean fewer trips through the event loop.
    chunk_size = 1 << 20


_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def _check_range(header: str | None, size: int) -> None:
    """Refuse a malformed or unsatisfiable Range in the error envelope (the file response serves good ones)."""
    if header is None:
        return
    unit, _, specs = header.partition("=")
    problem = unit.strip() != "bytes" or not specs.strip()
    for spec in specs.split(","):
        match = _RANGE.match(spec)
        if problem or match is None or (not match.group(1) and not match.group(2)):
            raise ApiError(400, "bad_request", f"malformed Range header {header!r}", "Range")
        start, end = match.group(1), match.group(2)
        if start and (int(start) >= size or (end and int(end) < int(start))):
            raise ApiError(416, "range_not_satisfiable", f"Range {header!r} is outside the file's {size} bytes", "Range", headers={"Content-Range": f"bytes */{size}"})
        if not start and int(end) == 0:
            raise ApiError(416, "range_not_satisfiable", f"Range {header!r} asks for no bytes", "Range", headers={"Content-Range": f"bytes */{size}"})


@router.get(
    "/{name}/versions/{version}/files/{file}",
    response_class=DataFileResponse,
    responses={
        **binary_answer("the Parquet file (or the asked Range of it)", uploads.PARQUET),
        **binary_answer("the asked Range of the file", uploads.PARQUET, status=206),
        304: {"description": "If-None-Match names this file's ETag"},
        **errors(404, 416),
    },
)
def version_file(name: str, version: str, file: str, request: Request, services: ServicesDep, _: ReadDep) -> Response:
    entry, path = services.datasets.file(name, version, file)
    etag = f'"{entry.sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "X-Checksum-Sha256": entry.sha256}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    _check_range(request.headers.get("range"), entry.size)
    return DataFileResponse(path, media_type=uploads.PARQUET, headers=headers)


@router.post(
    "/{name}/query",
    response_model=QueryResult,
    responses={200: {"content": {uploads.ARROW_STREAM: {"schema": BINARY}}}, **errors(404)},
)
def query(name: str, request: QueryRequest, http: Request, services: ServicesDep, _: ReadDep) -> Any:
    pinned, _schema, rows = services.datasets.pinned(name, str(request.version))
    result = services.queries.run(request.sql, rows, request.max_rows)
    headers = {"X-Replaybank-Version": str(pinned.version), "X-Replaybank-Truncated": str(result.truncated).lower()}
    if uploads.ARROW_STREAM in (http.headers.get("accept") or ""):
        chunks = _Chunks()
        with pa.ipc.new_stream(pa.PythonFile(chunks, mode="w"), result.table.schema) as writer:
            writer.write_table(result.table)
        return Response(chunks.take(), media_type=uploads.ARROW_STREAM, headers=headers)
    body = QueryResult(
        version=pinned.version,
        columns=[QueryColumn(name=field.name, type=str(field.type)) for field in result.table.schema],
        rows=json_rows(result.table),
        row_count=result.table.num_rows,
        truncated=result.truncated,
    )
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
