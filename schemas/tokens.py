"""API tokens: scopes and the models around them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.dataset import Name
from schemas.times import UtcDatetime

Scope = Literal["read", "write", "worker", "admin"]

SCOPE_GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin", "write", "read", "worker"}),
    "write": frozenset({"write", "read"}),
    "worker": frozenset({"worker", "read"}),
    "read": frozenset({"read"}),
}
"""What holding a scope lets a token do: admin holds all, write includes read, worker is read plus the job protocol."""


def grants(scopes: list[str] | frozenset[str], needed: str) -> bool:
    return any(needed in SCOPE_GRANTS.get(scope, frozenset()) for scope in scopes)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    scopes: list[Scope] = Field(min_length=1)


class TokenPublic(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    created_at: UtcDatetime
    revoked: bool


class TokenCreated(TokenPublic):
    token: str
    """The secret itself; shown once, stored only as a hash."""


class TokenSelf(BaseModel):
    """The token a request was made with: what a client (the dashboard) needs to know which controls to offer."""

    id: str
    name: str
    scopes: list[Scope]
