"""One error envelope for every failure: ours, FastAPI's validation errors and the router's own 404/405.

Every envelope carries the request's id (`error.request_id`, the same as the X-Request-ID header).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from schemas.errors import ErrorDetail, ErrorEnvelope
from schemas.http import REQUEST_ID_HEADER, ErrorCode
from service.observability.requests import request_id_of

Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    """A request the service refuses, answered as `{"error": {"code", "message", "field"}}` with this status."""

    def __init__(self, status: int, code: ErrorCode, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def not_found(what: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist", field)


def invalid_field(error: ValidationError, prefix: str | None = None) -> ApiError:
    """A 422 naming the first field pydantic refused, under `prefix` when given (e.g. `params.expectile`)."""
    first = error.errors()[0]
    field = ".".join([*([prefix] if prefix else []), *(str(part) for part in first["loc"])])
    return ApiError(422, "invalid", f"{field}: {first['msg']}", field)


def validated(model: type[Model], data: Any, prefix: str) -> Model:
    """`data` as `model`, or the 422 of `invalid_field` for the part of the request found at `prefix`."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_field(error, prefix) from None


def envelope(
    status: int,
    code: ErrorCode,
    message: str,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorDetail(code=code, message=message, field=field, request_id=request_id), details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


_HTTP_CODES: dict[int, ErrorCode] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid",
}


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"} and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    if error.code == "lease_lost":
        request.app.state.metrics.lease_lost()
    return envelope(error.status, error.code, error.message, error.field, headers=error.headers, request_id=request_id_of(request.scope))


def _allowed_methods(request: Request) -> str | None:
    """Every method the OpenAPI document declares for this path, or None for a path it does not describe.
    (The router's own 405 names only the methods of the first route matching the path, and each of our
    routes serves one method.)"""
    path = request.scope.get("path", "")
    methods = {
        method.upper()
        for template, operations in request.app.openapi().get("paths", {}).items()
        if compile_path(template)[0].match(path)
        for method in operations
    }
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    status = error.status_code
    message = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
    headers = getattr(error, "headers", None)
    if status == 404 and message == "Not Found":
        message = f"no route {request.url.path}"
    if status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        allowed = _allowed_methods(request)
        if allowed is not None:
            headers = {**(headers or {}), "Allow": allowed}
    code = _HTTP_CODES.get(status, "internal" if status >= 500 else "bad_request")
    return envelope(status, code, message, getattr(error, "field", None), headers=headers, request_id=request_id_of(request.scope))


def _malformed_json(item: dict[str, Any], document: Any) -> dict[str, Any]:
    """FastAPI reports broken JSON at `("body", <character offset>)`: name the body and say where it broke."""
    position = item["loc"][-1] if isinstance(item["loc"][-1], int) else 0
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    reason = (item.get("ctx") or {}).get("error", "JSON decode error")
    message = f"malformed JSON at line {line}, column {column} (character {position}): {reason}"
    return {"field": "body", "message": message, "type": "json_invalid"}


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    details = [
        _malformed_json(item, error.body)
        if item.get("type") == "json_invalid"
        else {"field": _field_name(item.get("loc", ())), "message": item.get("msg", ""), "type": item.get("type", "")}
        for item in error.errors()
    ]
    first = details[0] if details else {"field": None, "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return envelope(422, "invalid", message, first["field"] or None, details=details, request_id=request_id_of(request.scope))


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    # answered by Starlette's outermost middleware, outside the one that adds the header to every other answer
    request_id = request_id_of(request.scope)
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return envelope(500, "internal", f"the service failed: {error.__class__.__name__}", headers=headers, request_id=request_id)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
