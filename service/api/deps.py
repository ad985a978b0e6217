"""Typed dependencies: the app's services and the authenticated principal with a required scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import Principal
from service.errors import ApiError
from service.jobs.protocol import WorkerProtocol
from service.jobs.submission import Jobs
from service.policies import Policies
from service.services import Services
from service.sweeps import Sweeps


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_jobs(services: ServicesDep) -> Jobs:
    return services.jobs


def get_protocol(services: ServicesDep) -> WorkerProtocol:
    return services.protocol


def get_policies(services: ServicesDep) -> Policies:
    return services.policies


def get_sweeps(services: ServicesDep) -> Sweeps:
    return services.sweeps


JobsDep = Annotated[Jobs, Depends(get_jobs)]
ProtocolDep = Annotated[WorkerProtocol, Depends(get_protocol)]
PoliciesDep = Annotated[Policies, Depends(get_policies)]
SweepsDep = Annotated[Sweeps, Depends(get_sweeps)]


BEARER = HTTPBearer(auto_error=False, description="a token from `replaybank token create` (or the admin token)")
"""Declares the bearer scheme in the OpenAPI document; a missing token is answered here in the error envelope."""


def authenticate(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    """The token's principal, or 401."""
    secret = credentials.credentials if credentials is not None else ""
    if not secret.strip():
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'", "Authorization", headers={"WWW-Authenticate": "Bearer"})
    principal = services.tokens.authenticate(secret.strip())
    if principal is None:
        raise ApiError(401, "unauthorized", "the token is unknown or revoked", "Authorization", headers={"WWW-Authenticate": "Bearer"})
    return principal


AuthenticatedDep = Annotated[Principal, Depends(authenticate)]


def require_scope(scope: str) -> Callable[[Principal], Principal]:
    """A dependency returning the principal if its token holds `scope` (admin holds all), else 403."""

    def dependency(principal: AuthenticatedDep) -> Principal:
        if not principal.allows(scope):
            raise ApiError(403, "forbidden", f"this needs a token with the {scope!r} scope", "Authorization")
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


ReadDep = Annotated[Principal, Depends(require_scope("read"))]
WriteDep = Annotated[Principal, Depends(require_scope("write"))]
WorkerDep = Annotated[Principal, Depends(require_scope("worker"))]
AdminDep = Annotated[Principal, Depends(require_scope("admin"))]


def may_append(principal: Principal, dataset: str, services: Services, lease: str | None = None) -> bool:
    """Whether `principal` may append rows to `dataset`: write scope, or a worker sending the lease
    (`Replaybank-Lease`) of the running collect job on that dataset it holds."""
    if principal.allows("write"):
        return True
    return lease is not None and principal.allows("worker") and services.protocol.collect_lease_allows_append(dataset, lease)
