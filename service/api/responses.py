"""What the OpenAPI document says about answers other than the route's own model: the error envelope for
every status a route can fail with, and the media types of the raw bodies (uploads, files, artifacts).

Routers declare `PROTECTED` (or `PUBLIC`) for the failures every route can give, and add `errors(...)`
for the statuses of their own; raw bodies are described with `raw_body` and `binary_answer`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from schemas.errors import ErrorEnvelope
from schemas.transition import CLIENT_COLUMNS, MAX_SOURCE_LENGTH

_WHEN = {
    400: "a malformed request: an unreadable body or Content-Length",
    401: "no token, or a token unknown or revoked",
    403: "the token lacks the scope this needs",
    404: "a named resource does not exist",
    409: "the resource's state refuses this (exists already, in use, finished, lease taken over)",
    413: "the body is larger than REPLAYBANK_MAX_UPLOAD_BYTES",
    415: "the body's Content-Type is not one this accepts",
    416: "the Range is outside the file",
    422: "a field is invalid; `error.field` names it, `details` lists every problem",
    500: "the service failed (a bug); the message names the exception",
    503: "a dependency (catalog, storage, queue) is not answering",
}

Responses = dict[int | str, dict[str, Any]]


def errors(*statuses: int) -> Responses:
    """The error envelope as the body of each status, with what it means here."""
    return {
        status: {"model": ErrorEnvelope, "description": f"{HTTPStatus(status).phrase}: {_WHEN[status]}"} for status in statuses
    }


PUBLIC: Responses = errors(400, 413, 422, 500)
"""What any route can answer: the body-size middleware's 400/413, request validation's 422, and a bug's 500."""

PROTECTED: Responses = {**PUBLIC, **errors(401, 403)}
"""A route behind a bearer token (`service.api.deps`)."""

BINARY = {"type": "string", "format": "binary"}


def raw_body(*media_types: str, json_schema: dict[str, Any] | None = None, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself: non-empty bytes for each media type,
    `json_schema` for application/json."""
    content = {media_type: {"schema": {**BINARY, "minLength": 1}} for media_type in media_types}
    if json_schema is not None:
        content["application/json"] = {"schema": json_schema}
    return {"requestBody": {"required": required, "content": content}}


def binary_answer(description: str, *media_types: str, status: int = 200, headers: dict[str, str] | None = None) -> Responses:
    """A 200 (or `status`) whose body is bytes of one of `media_types`; `headers` names the headers it sets."""
    answer: dict[str, Any] = {
        "description": description,
        "content": {media_type: {"schema": BINARY} for media_type in media_types},
    }
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return {status: answer}


def presigned_redirect(headers: dict[str, str] | None = None) -> Responses:
    """The 307 a download answers with object storage; `headers` names what it sets beside `Location`."""
    declared = {"Location": "the presigned object-storage URL", **(headers or {})}
    return {
        307: {
            "description": "With object storage (REPLAYBANK_STORAGE_URL): the bytes are at `Location`, a presigned URL "
            "valid for REPLAYBANK_PRESIGN_SECONDS. Repeat the request there (same Range) without the Authorization header.",
            "headers": {name: {"description": text, "schema": {"type": "string"}} for name, text in declared.items()},
        }
    }


PRESIGNED_REDIRECT = presigned_redirect()


_VALUES = {"type": "array", "items": {"type": "number"}, "description": "flattened row-major, as long as the spec says"}
JSON_ROWS: dict[str, Any] = {
    "type": "object",
    "required": ["rows"],
    "additionalProperties": False,
    "properties": {
        "rows": {
            "type": "array",
            "minItems": 1,
            "description": "one object per transition, in episode order",
            "items": {
                "type": "object",
                "required": list(CLIENT_COLUMNS),
                "additionalProperties": False,
                "properties": {
                    "episode_id": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                    "step": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                    "observation": _VALUES,
                    "action": {"anyOf": [_VALUES, {"type": "integer", "description": "a discrete action"}]},
                    "reward": {"type": "number"},
                    "next_observation": _VALUES,
                    "terminal": {"type": "boolean"},
                    "truncated": {"type": "boolean"},
                    "source": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_SOURCE_LENGTH,
                        "description": "who logged it (default 'logged'; 'policy:<id>' for collected rows)",
                    },
                },
            },
        }
    },
}
"""The application/json upload: `{"rows": [...]}`, one object per transition."""
