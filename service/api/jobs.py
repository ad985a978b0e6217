"""Jobs as users see them: submit, list, show, cancel, follow (server-sent events), metric history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from schemas.dataset import Name, Page
from schemas.jobs import FINISHED_STATUSES, JobCreate, JobPublic, JobStatus, MetricPoint
from schemas.http import EVENT_STREAM
from service.api.deps import JobsDep, ReadDep, WriteDep
from service.api.responses import PROTECTED, errors

EVENT_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0

JobId = Annotated[str, "the job's id"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROTECTED)
JOB_EVENT = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "job"},
        "id": {"type": "string", "description": "the job's updated_at"},
        "data": {"type": "string", "contentMediaType": "application/json", "description": "the job, as GET /v1/jobs/{job_id}"},
    },
}


@router.post("", status_code=201, responses=errors(404, 409))
async def submit_job(create: JobCreate, jobs: JobsDep, _: WriteDep) -> JobPublic:
    return await jobs.submit(create)


@router.get("")
async def list_jobs(
    jobs: JobsDep,
    _: ReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    status: JobStatus | None = None,
    dataset: Name | None = None,
) -> Page[JobPublic]:
    return await jobs.list(limit, cursor, status, dataset)


@router.get("/{job_id}", responses=errors(404))
async def get_job(job_id: JobId, jobs: JobsDep, _: ReadDep) -> JobPublic:
    return await jobs.get(job_id)


@router.post("/{job_id}/cancel", responses=errors(404, 409))
async def cancel_job(job_id: JobId, jobs: JobsDep, _: WriteDep) -> JobPublic:
    return await jobs.cancel(job_id)


@router.get("/{job_id}/metrics", responses=errors(404))
async def job_metrics(
    job_id: JobId,
    jobs: JobsDep,
    _: ReadDep,
    after_step: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> list[MetricPoint]:
    return await jobs.metrics(job_id, after_step, limit)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events: `event: job` with the job's JSON at each change, until it finishes",
            "content": {"text/event-stream": {"schema": JOB_EVENT}},
        },
        **errors(404),
    },
)
async def job_events(job_id: JobId, request: Request, jobs: JobsDep, _: ReadDep) -> StreamingResponse:
    """`event: job` with the job's JSON whenever it changes, until it finishes; comments keep the line open."""
    first = await jobs.get(job_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        job, last_sent, idle = first, None, 0.0
        while True:
            if job.updated_at != last_sent:
                yield f"event: job\nid: {job.updated_at.isoformat()}\ndata: {job.model_dump_json()}\n\n"
                last_sent, idle = job.updated_at, 0.0
            if job.status in FINISHED_STATUSES or await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)
            idle += EVENT_POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                idle = 0.0
            job = await jobs.get(job_id)

    return StreamingResponse(
        events(), media_type=EVENT_STREAM, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
