"""The log format of `replaybank serve`: one JSON object per line by default (REPLAYBANK_LOG_FORMAT=json),
or uvicorn's plain text (`text`).

A JSON line holds `time` (UTC, RFC 3339), `level`, `logger` and `message`; the id of the request being
handled (`request_id`) when there is one; the record's structured `fields` (the access line's method,
route, path, status and duration_ms); and `exception` with the traceback when one was logged.
uvicorn's own records go through the same formatter, so a log collector reads one format.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import datetime, timezone
from typing import Any, Literal

from uvicorn.config import LOGGING_CONFIG

from service.observability.requests import current_request_id

LogFormat = Literal["json", "text"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's logging configuration, with the service's `replaybank.*` loggers beside it at INFO on the
    same stream; with `json`, every handler writes JSON lines. (The request log is the service's own
    `replaybank.access` line, so uvicorn's access log is turned off by the caller.)"""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["replaybank"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    if log_format == "json":
        for formatter in config["formatters"]:
            config["formatters"][formatter] = {"()": f"{JsonFormatter.__module__}.{JsonFormatter.__qualname__}"}
    return config
