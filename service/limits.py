"""The request body size limit, enforced while the body streams in (not after reading it all)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import envelope
from service.observability.requests import request_id_of


class BodyTooLarge(HTTPException):
    field = "body"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes (REPLAYBANK_MAX_UPLOAD_BYTES)")


class BodySizeLimit:
    """Answers 413 at once for a declared Content-Length over the limit, and stops a body that grows past it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await envelope(400, "bad_request", "Content-Length is not a number", "Content-Length", request_id=request_id_of(scope))(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                error = BodyTooLarge(self.max_bytes)
                await envelope(413, "payload_too_large", error.detail, "body", headers={"Connection": "close"}, request_id=request_id_of(scope))(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)
