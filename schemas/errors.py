"""The one error envelope every failing request answers with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.http import ErrorCode


class ErrorDetail(BaseModel):
    code: ErrorCode
    """A stable machine-readable name, e.g. `not_found`, `invalid_body`, `payload_too_large`."""
    message: str
    field: str | None = None
    """The request field (or column) the problem is about, when there is one."""
    request_id: str | None = None
    """The request's id, as in the X-Request-ID header and the service's log line of the request: quote it
    when reporting a problem."""


class ErrorEnvelope(BaseModel):
    error: ErrorDetail
    details: list[dict[str, Any]] | None = None
    """Validation errors only: every offending field, as `{field, message, type}`."""
