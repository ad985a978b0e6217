"""API tokens: create (the secret is shown once), list and revoke with an admin token; any token may ask about itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from schemas.dataset import Page
from schemas.tokens import TokenCreate, TokenCreated, TokenPublic, TokenSelf
from service.api.deps import AdminDep, AuthenticatedDep, ServicesDep
from service.api.responses import PROTECTED, errors
from service.auth import public

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=PROTECTED)
whoami_router = APIRouter(tags=["tokens"], responses=PROTECTED)


@router.post("", status_code=201, response_model=TokenCreated, responses=errors(409))
def create_token(request: TokenCreate, services: ServicesDep, _: AdminDep) -> TokenCreated:
    row, secret = services.tokens.create(request)
    return TokenCreated(**public(row).model_dump(), token=secret)


@router.get("", response_model=Page[TokenPublic])
def list_tokens(services: ServicesDep, _: AdminDep) -> Page[TokenPublic]:
    tokens = [public(row) for row in services.tokens.list()]
    return Page(data=tokens, count=len(tokens))


# Not /v1/tokens/self: "self" is a valid token name, which DELETE /v1/tokens/{token_id} takes.
@whoami_router.get("/v1/whoami", response_model=TokenSelf)
def whoami(principal: AuthenticatedDep) -> TokenSelf:
    """The calling token's name and scopes (never its secret), whatever its scope."""
    return TokenSelf(id=principal.token_id, name=principal.name, scopes=sorted(principal.scopes))  # type: ignore[arg-type]


@router.delete("/{token_id}", status_code=204, responses=errors(404))
def revoke_token(token_id: Annotated[str, Path(description="the token's id or name")], services: ServicesDep, _: AdminDep) -> Response:
    services.tokens.revoke(token_id)
    return Response(status_code=204)
