"""Datasets, their versions, tags, files, snapshots and queries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from schemas.dataset import (
    AppendResult,
    DatasetCreate,
    DatasetPatch,
    DatasetPublic,
    Page,
    QueryRequest,
    QueryResult,
    TAG_PATTERN,
    TagMoved,
    TagPublic,
    TagSet,
    VersionFiles,
    VersionPublic,
    VersionStats,
)
from schemas.http import ARROW_STREAM, CHECKSUM_HEADER, IDEMPOTENCY_KEY_HEADER, LEASE_HEADER, PARQUET, ROWS_HEADER, VERSION_HEADER
from service import responses
from service.api.deps import AdminDep, AuthenticatedDep, ReadDep, ServicesDep, WriteDep, may_append
from service.api.responses import BINARY, JSON_ROWS, PRESIGNED_REDIRECT, PROTECTED, binary_answer, errors, raw_body
from service.errors import ApiError

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=PROTECTED)

IMMUTABLE = "public, max-age=31536000, immutable"
MAX_IDEMPOTENCY_KEY = 200
Limit = Annotated[int, Query(ge=1, le=1000)]
VersionCursor = Annotated[str | None, Query(pattern=r"^[0-9]+$", description="the `next` of the previous page")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias=IDEMPOTENCY_KEY_HEADER, min_length=1, max_length=MAX_IDEMPOTENCY_KEY, pattern=r"^[\x20-\x7e]+$"),
]
SNAPSHOT_HEADERS = {VERSION_HEADER: "the version number answered", ROWS_HEADER: "its rows"}


@router.post("", status_code=201, response_model=DatasetPublic, responses=errors(409))
def create_dataset(request: DatasetCreate, services: ServicesDep, _: WriteDep) -> DatasetPublic:
    return services.datasets.create(request)


@router.get("", response_model=Page[DatasetPublic])
def list_datasets(services: ServicesDep, _: ReadDep, limit: Limit = 100, cursor: str | None = None) -> Page[DatasetPublic]:
    return services.datasets.page(limit, cursor)


@router.get("/{name}", response_model=DatasetPublic, responses=errors(404))
def get_dataset(name: str, services: ServicesDep, _: ReadDep) -> DatasetPublic:
    return services.datasets.public(services.datasets.get(name))


@router.patch("/{name}", response_model=DatasetPublic, responses=errors(404))
def edit_dataset(name: str, patch: DatasetPatch, services: ServicesDep, _: WriteDep) -> DatasetPublic:
    """Replace the description (a Markdown card), the metadata or `env_id`; the spec stays as created."""
    return services.datasets.edit(name, patch)


@router.delete("/{name}", status_code=204, responses=errors(404, 409))
def delete_dataset(name: str, services: ServicesDep, _: AdminDep) -> Response:
    services.datasets.delete(name)
    return Response(status_code=204)


@router.post(
    "/{name}/transitions",
    status_code=201,
    response_model=AppendResult,
    responses={
        200: {"model": AppendResult, "description": "a replay: the Idempotency-Key already made this version"},
        **errors(404, 409, 415),
    },
    openapi_extra=raw_body(ARROW_STREAM, PARQUET, json_schema=JSON_ROWS),
)
async def append_transitions(
    name: str,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: AuthenticatedDep,
    idempotency_key: IdempotencyKey = None,
) -> AppendResult:
    if not await run_in_threadpool(may_append, principal, name, services, request.headers.get(LEASE_HEADER)):
        raise ApiError(403, "forbidden", f"this token may not append to {name!r}", "Authorization")
    result = await services.ingest.append(name, request.stream(), request.headers.get("content-type"), idempotency_key)
    if result.replayed:
        response.status_code = 200
    return result


@router.get("/{name}/versions", response_model=Page[VersionPublic], responses=errors(404))
def list_versions(name: str, services: ServicesDep, _: ReadDep, limit: Limit = 100, cursor: VersionCursor = None) -> Page[VersionPublic]:
    return services.datasets.versions(name, limit, cursor)


@router.get("/{name}/versions/{version}", response_model=VersionStats, responses=errors(404))
def version_stats(name: str, version: str, services: ServicesDep, _: ReadDep) -> VersionStats:
    return services.datasets.stats(name, version)


@router.get("/{name}/tags", response_model=Page[TagPublic], responses=errors(404))
def list_tags(name: str, services: ServicesDep, _: ReadDep) -> Page[TagPublic]:
    return services.datasets.tags(name)


@router.put("/{name}/tags/{tag}", response_model=TagMoved, responses=errors(404))
def set_tag(name: str, tag: Annotated[str, Path(json_schema_extra={"pattern": TAG_PATTERN})], request: TagSet, services: ServicesDep, _: WriteDep) -> TagMoved:
    return services.datasets.set_tag(name, tag, request.version)


@router.delete("/{name}/tags/{tag}", status_code=204, responses=errors(404))
def delete_tag(name: str, tag: str, services: ServicesDep, _: AdminDep) -> Response:
    services.datasets.delete_tag(name, tag)
    return Response(status_code=204)


@router.get(
    "/{name}/versions/{version}/transitions",
    response_class=StreamingResponse,
    responses={
        **binary_answer("the version's rows; Parquet when Accept asks for it", ARROW_STREAM, PARQUET, headers=SNAPSHOT_HEADERS),
        **errors(404),
    },
)
def version_transitions(name: str, version: str, request: Request, services: ServicesDep, _: ReadDep) -> StreamingResponse:
    answer = responses.version_rows(services.datasets, name, version, request.headers.get("accept"))
    return StreamingResponse(answer.body, media_type=answer.media_type, headers=answer.headers)


@router.get("/{name}/versions/{version}/files", response_model=VersionFiles, responses=errors(404))
def version_files(name: str, version: str, services: ServicesDep, _: ReadDep) -> VersionFiles:
    pinned, files = services.datasets.manifest(name, version)
    return VersionFiles(version=pinned.version, data=files, count=len(files))


class DataFileResponse(FileResponse):
    # Data files are large and read whole: bigger chunks mean fewer trips through the event loop.
    chunk_size = 1 << 20


@router.get(
    "/{name}/versions/{version}/files/{file}",
    response_class=DataFileResponse,
    responses={
        **binary_answer("the Parquet file (or the asked Range of it)", PARQUET),
        **binary_answer("the asked Range of the file", PARQUET, status=206),
        304: {"description": "If-None-Match names this file's ETag"},
        **PRESIGNED_REDIRECT,
        **errors(404, 416),
    },
)
def version_file(name: str, version: str, file: str, request: Request, services: ServicesDep, _: ReadDep) -> Response:
    entry, stored = services.datasets.file(name, version, file)
    etag = f'"{entry.sha256}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, CHECKSUM_HEADER: entry.sha256}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    responses.check_range(range_header, entry.size)
    return responses.stored_file(
        services.storage.store, stored, PARQUET, headers, range_header=range_header, file_response=DataFileResponse, redirect=True
    )


@router.post(
    "/{name}/query",
    response_model=QueryResult,
    responses={200: {"content": {ARROW_STREAM: {"schema": BINARY}}}, **errors(404)},
)
def query(name: str, request: QueryRequest, http: Request, services: ServicesDep, _: ReadDep) -> Response:
    answer = responses.query_answer(services.datasets, services.queries, name, request, http.headers.get("accept"))
    return Response(answer.body, media_type=answer.media_type, headers=answer.headers)
