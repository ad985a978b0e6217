"""What operators look at: `GET /metrics` (Prometheus text format) and `GET /v1/workers`.

Both need a read token like every other route but health: the metrics name datasets and workers, and
Prometheus sends a bearer token itself (`authorization: {credentials_file: ...}` in a scrape config), so
one listener and one way to authenticate serve it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from schemas.dataset import Page
from schemas.http import PROMETHEUS_TEXT
from schemas.workers import WorkerPublic
from service.api.deps import ReadDep, ServicesDep
from service.api.responses import PROTECTED
from service.observability.metrics import CONTENT_TYPE

router = APIRouter(responses=PROTECTED)

Limit = Annotated[int, Query(ge=1, le=1000)]
WorkerCursor = Annotated[str | None, Query(min_length=1, max_length=120, description="the `next` of the previous page")]


@router.get(
    "/metrics",
    tags=["operators"],
    response_class=Response,
    responses={
        200: {
            "description": "every metric, in the Prometheus text format (version 0.0.4)",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
        }
    },
)
def metrics(services: ServicesDep, _: ReadDep) -> Response:
    """Requests, uploads, jobs (queued, running, durations), leases lost and workers' heartbeats."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/v1/workers", tags=["workers"], response_model=Page[WorkerPublic])
async def list_workers(services: ServicesDep, _: ReadDep, limit: Limit = 100, cursor: WorkerCursor = None) -> Page[WorkerPublic]:
    """Workers that claimed (a long-poll finding no job counts) or heartbeated within REPLAYBANK_WORKERS_WINDOW_SECONDS,
    by name: device, threads, the job each holds, last heartbeat."""
    return await services.roster.recent(limit, cursor)
