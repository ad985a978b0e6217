"""One middleware around every HTTP request: it gives the request its id (a sane `X-Request-ID` the client
sent, or a new one), returns the id in the `X-Request-ID` header of the answer, counts and times the
request by its route template (`/v1/jobs/{job_id}`, never the raw path, so ids add no series) and writes
one log line for it on `replaybank.access`.

The id is kept in the request's scope (`request_id_of`, for the error envelope) and, while the request is
handled, in a context variable the log formatter reads, so every log line the request causes carries it.
It sits outside everything but Starlette's last-resort error middleware, whose 500 sets the header itself
(`service.errors`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.http import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from service.observability.metrics import UNMATCHED_ROUTE, ServiceMetrics

access_log = logging.getLogger("replaybank.access")

SCOPE_KEY = "replaybank.request_id"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
_SANE = re.compile(REQUEST_ID_PATTERN)

current_request_id: ContextVar[str | None] = ContextVar("replaybank_request_id", default=None)
"""The id of the request being handled in this context (None outside a request)."""


def request_id_of(scope: Scope) -> str | None:
    return scope.get(SCOPE_KEY)


def choose_request_id(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is sane (1 to 128 of `A-Za-z0-9._:-`), else a new random one."""
    for name, value in scope.get("headers", []):
        if name == _HEADER:
            offered = value.decode("latin-1")
            if _SANE.fullmatch(offered):
                return offered
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (`/v1/datasets/{name}`), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestTelemetry:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(scope)
        scope[SCOPE_KEY] = request_id
        header = (_HEADER, request_id.encode("latin-1"))
        status = 500  # what the client gets if the app raises before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            current_request_id.reset(token)
            self._record(scope, request_id, status, seconds)

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        method, route, path = scope["method"], route_template(scope), scope.get("path", "")
        self.metrics.request_answered(method, route, status, seconds)
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        access_log.info(
            "%s %s %d %.1f ms (request %s)", method, path, status, seconds * 1000, request_id, extra={"fields": fields}
        )
