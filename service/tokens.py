"""Token management for the command line (`replaybank token create|revoke`), straight on the catalog."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from schemas.tokens import TokenCreate, TokenPublic
from service.auth import Tokens, public
from service.catalog import Catalog
from service.errors import ApiError, invalid_field
from service.settings import Settings


def _tokens(settings: Settings) -> tuple[Catalog, Tokens]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.catalog_url)
    catalog.create_all()
    return catalog, Tokens(catalog)


def create_token(settings: Settings, name: str, scopes: list[str]) -> str:
    """Create a token and return its secret (shown once; only its hash is stored). Raises ApiError on a taken name."""
    catalog, tokens = _tokens(settings)
    try:
        _, secret = tokens.create(TokenCreate(name=name, scopes=scopes))  # type: ignore[arg-type]
        return secret
    finally:
        catalog.close()


def revoke_token(settings: Settings, token_id_or_name: str) -> TokenPublic:
    """Revoke a token by id or name; raises ApiError (404) when there is none."""
    catalog, tokens = _tokens(settings)
    try:
        return public(tokens.revoke(token_id_or_name))
    finally:
        catalog.close()


def _settings(data_dir: str | None, database_url: str | None) -> Settings:
    overrides = {"data_dir": data_dir, "database_url": database_url}
    return Settings(**{key: value for key, value in overrides.items() if value is not None})  # type: ignore[arg-type]


def create_token_command(name: str, scopes: list[str], data_dir: str | None = None, database_url: str | None = None) -> None:
    """`replaybank token create`: prints the new secret alone on stdout (so scripts can capture it)."""
    try:
        secret = create_token(_settings(data_dir, database_url), name, scopes)
    except (ApiError, ValidationError) as error:
        print(f"error: {_reason(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    print(secret)


def revoke_token_command(token_id_or_name: str, data_dir: str | None = None, database_url: str | None = None) -> None:
    """`replaybank token revoke`."""
    try:
        revoked = revoke_token(_settings(data_dir, database_url), token_id_or_name)
    except ApiError as error:
        print(f"error: {error.message}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"revoked token {revoked.name} ({revoked.id})")


def _reason(error: ApiError | ValidationError) -> str:
    return (invalid_field(error) if isinstance(error, ValidationError) else error).message
