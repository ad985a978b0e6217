"""The core every part of the client shares: one pooled HTTP connection, `_request`, and the error type.

`_request` adds the bearer token, retries transport failures of requests that are safe to repeat (with
a short exponential back-off), follows a GET's 307 to a presigned object-storage URL (without the token:
the URL carries its own signature), and turns the service's error envelope into a `ReplaybankError`.
`_json`, `_model` and `_paginate` build on it; the modules beside this one add the endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from schemas import http

Version = int | str
"""A version number, `latest`, or a tag."""

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer advances."""

ModelT = TypeVar("ModelT", bound=BaseModel)
CoreT = TypeVar("CoreT", bound="ClientCore")

CONTENT_TYPES = {
    "arrow": http.ARROW_STREAM,
    "parquet": http.PARQUET,
    "json": http.JSON,
}

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

_TRANSIENT_STATUSES = frozenset({0, 502, 503, 504})

ClientErrorCode = http.ErrorCode | Literal["unreachable", "http_error"]
"""The service's codes, plus the client's own: `unreachable` (no answer) and `http_error` (an answer without the envelope)."""


class ReplaybankError(Exception):
    """The service refused a request (or could not be reached: status 0)."""

    def __init__(self, status: int, code: ClientErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{message} [{status} {code}{f', field {field}' if field else ''}]")
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @property
    def transient(self) -> bool:
        """The service could not be reached or is restarting, as opposed to refusing the request."""
        return self.status in _TRANSIENT_STATUSES


class ClientCore:
    """The connection to one service and the request helpers the endpoint mixins share."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._transport_injected = transport is not None
        self._http = httpx.Client(
            base_url=self.url,
            headers=self._auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self: CoreT) -> CoreT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: bool | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; retries transport failures when `retry` (default: for idempotent methods).

        A streamed response is returned open: the caller reads and closes it.
        """
        retry = method in _IDEMPOTENT_METHODS if retry is None else retry
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                request = self._http.build_request(method, path, **kwargs)
                response = self._http.send(request, stream=stream)
                location = response.headers.get("location")
                if method == "GET" and response.status_code == PRESIGNED_REDIRECT and location:
                    redirect = response
                    redirect.close()
                    response = self._http.send(presigned_request(request, location), stream=stream)
                    response.history = [redirect]  # where `service_headers` finds what the service said
                break
            except httpx.TransportError as error:
                if attempt + 1 >= attempts:
                    raise ReplaybankError(
                        0, "unreachable", f"{method} {self._http.base_url}{path} failed: {error or type(error).__name__}"
                    ) from error
                time.sleep(backoff(attempt))
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _model(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        return model.model_validate(self._json(method, path, **kwargs))

    def _paginate(self, model: type[ModelT], path: str, params: dict[str, Any] | None = None, limit: int = 100) -> list[ModelT]:
        """Every item of a paged list (`{data, count, next}`), following the cursors."""
        items: list[ModelT] = []
        query = {**(params or {}), "limit": limit}
        while True:
            page = self._json("GET", path, params=query)
            items.extend(model.model_validate(item) for item in page["data"])
            if not page.get("next"):
                return items
            query["cursor"] = page["next"]


PRESIGNED_REDIRECT = 307
"""How the service answers a download whose bytes are in object storage: go to `Location` instead."""


def presigned_request(original: httpx.Request, location: str) -> httpx.Request:
    """The same GET (its Range and other headers) at a presigned URL, without the bearer token: the URL is
    signed, the object store would refuse a second credential, and the token must not leave the service."""
    headers = {name: value for name, value in original.headers.items() if name.lower() not in ("authorization", "host")}
    return httpx.Request("GET", location, headers=headers)


def service_headers(response: httpx.Response) -> httpx.Headers:
    """The headers the service answered with: its 307's when the bytes came from a presigned URL (the object
    store knows nothing of the service's own headers, such as a checkpoint's step)."""
    return response.history[0].headers if response.history else response.headers


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` + 1 of a failed transfer."""
    return min(0.25 * 2**attempt, 4.0)


def error_from(response: httpx.Response) -> ReplaybankError:
    """The error an error response stands for: its envelope, or its status and text when it has none."""
    try:
        error = response.json()["error"]
        return ReplaybankError(response.status_code, error["code"], error["message"], error.get("field"))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return ReplaybankError(response.status_code, "http_error", text)


def segment(value: object) -> str:
    """One path segment, quoted (a name, tag or id may hold any character)."""
    return quote(str(value), safe="")


def dataset_path(name: str) -> str:
    return f"/v1/datasets/{segment(name)}"


def version_path(name: str, version: Version) -> str:
    return f"{dataset_path(name)}/versions/{segment(version)}"
