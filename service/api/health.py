"""Liveness (no auth) and readiness (catalog, storage and queue answer)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ServicesDep
from service.api.responses import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(services: ServicesDep) -> dict[str, str]:
    await services.check_ready()
    return {"status": "ready"}
