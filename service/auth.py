"""Bearer tokens: generated secrets, stored only as SHA-256 hashes, with scopes and a revoked flag."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from schemas.tokens import TokenCreate, TokenPublic, grants
from service.catalog import Catalog, CatalogConflict
from service.catalog.tables import TokenRow, utcnow
from service.errors import ApiError, not_found

ADMIN_TOKEN_NAME = "admin"
WORKER_TOKEN_NAME = "worker"
TOKEN_PREFIX = "rb_"


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Secrets are 256 random bits, so a plain hash cannot be brute-forced; no salt or slow KDF needed.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's id, name and scopes."""

    token_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return grants(self.scopes, scope)


def public(row: TokenRow) -> TokenPublic:
    return TokenPublic(id=row.id, name=row.name, scopes=row.scopes, created_at=row.created_at, revoked=row.revoked)  # type: ignore[arg-type]


class Tokens:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def authenticate(self, secret: str) -> Principal | None:
        row = self.catalog.token_by_hash(hash_secret(secret))
        if row is None or row.revoked:
            return None
        return Principal(token_id=row.id, name=row.name, scopes=frozenset(row.scopes))

    def create(self, request: TokenCreate) -> tuple[TokenRow, str]:
        secret = new_secret()
        row = TokenRow(id=uuid.uuid4().hex, name=request.name, token_hash=hash_secret(secret), scopes=list(request.scopes), created_at=utcnow())
        try:
            self.catalog.add_token(row)
        except CatalogConflict:
            raise ApiError(409, "conflict", f"a token named {request.name!r} already exists", "name") from None
        return row, secret

    def revoke(self, id_or_name: str) -> TokenRow:
        row = self.catalog.token(id_or_name)
        if row is None:
            raise not_found(f"token {id_or_name!r}", "token")
        self.catalog.revoke_token(row.id)
        row.revoked = True
        return row

    def list(self) -> list[TokenRow]:
        return self.catalog.tokens()

    def ensure_admin(self, configured: str | None) -> str | None:
        """Make the configured admin token valid, or generate one on first start; returns a newly generated secret."""
        if configured is not None:
            self.ensure_configured(ADMIN_TOKEN_NAME, configured, ["admin"])
            return None
        if self.catalog.token(ADMIN_TOKEN_NAME) is not None:
            return None
        secret = new_secret()
        self.catalog.add_token(TokenRow(id=uuid.uuid4().hex, name=ADMIN_TOKEN_NAME, token_hash=hash_secret(secret), scopes=["admin"], created_at=utcnow()))
        return secret

    def ensure_configured(self, name: str, secret: str, scopes: list[str]) -> None:
        """Make a token given by the deployment (e.g. REPLAYBANK_WORKER_TOKEN) valid under `name` with `scopes`."""
        existing = self.catalog.token(name)
        if existing is None:
            self.catalog.add_token(TokenRow(id=uuid.uuid4().hex, name=name, token_hash=hash_secret(secret), scopes=scopes, created_at=utcnow()))
        elif existing.token_hash != hash_secret(secret) or existing.revoked or list(existing.scopes) != scopes:
            self.catalog.replace_token_hash(existing.id, hash_secret(secret), scopes)
