"""Liveness (no auth) and readiness (catalog and storage answer)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ServicesDep
from service.api.responses import errors
from service.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
def readyz(services: ServicesDep) -> dict[str, str]:
    checks = {"catalog": services.catalog.ping, "storage": lambda: services.storage.tables.stat()}
    checks.update(services.readiness_checks)
    for name, check in checks.items():
        try:
            check()
        except Exception as error:  # any failure of a dependency means "not ready", with its reason
            raise ApiError(503, "not_ready", f"{name} is not answering: {error.__class__.__name__}: {error}", name) from None
    return {"status": "ready"}
