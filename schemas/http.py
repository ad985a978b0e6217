"""The HTTP contract beyond the JSON models: header names, media types and every error code the service sends."""

from __future__ import annotations

from typing import Literal

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
"""On an upload: the same key with the same body adds nothing twice; with another body it is a 409."""
LEASE_HEADER = "Replaybank-Lease"
"""On every worker call about a held job (and a collect job's appends): the lease token from the claim."""
STEP_HEADER = "Replaybank-Step"
"""On a checkpoint, both ways: the training step it was taken at."""
VERSION_HEADER = "X-Replaybank-Version"
"""On a snapshot or query answer: the concrete version a `latest` or tag resolved to."""
ROWS_HEADER = "X-Replaybank-Rows"
"""On a snapshot answer: how many rows the version holds."""
TRUNCATED_HEADER = "X-Replaybank-Truncated"
"""On a query answer: `true` when the row cap cut the result."""
TOTAL_ROWS_HEADER = "X-Replaybank-Total-Rows"
"""On a query answer: how many rows the query gave before the cap, when the service could count them in time."""
CHECKSUM_HEADER = "X-Checksum-Sha256"
"""On a version file: the SHA-256 of its bytes (also its ETag)."""
REQUEST_ID_HEADER = "X-Request-ID"
"""On every answer: the id the service logged the request under, also `error.request_id` in an error. A client
may send its own (1 to 128 letters, digits and `._:-`); anything else is replaced by a new one."""

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
JSON = "application/json"
TAR = "application/x-tar"
ONNX = "application/onnx"
OCTET_STREAM = "application/octet-stream"
EVENT_STREAM = "text/event-stream"
PROMETHEUS_TEXT = "text/plain"
"""`GET /metrics`: the Prometheus text exposition format (version 0.0.4)."""

ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "conflict",
    "idempotency_conflict",
    "lease_lost",
    "cancelled",
    "payload_too_large",
    "unsupported_media_type",
    "range_not_satisfiable",
    "invalid",
    "invalid_body",
    "invalid_rows",
    "invalid_column",
    "invalid_sql",
    "query_timeout",
    "not_ready",
    "internal",
]
"""`error.code` of every error envelope: a stable machine-readable name for what went wrong."""
