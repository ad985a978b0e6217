"""`replaybank serve`: uvicorn on the app factory."""

from __future__ import annotations

import copy
import sys
from typing import Any

import uvicorn
from sqlalchemy.engine import make_url
from uvicorn.config import LOGGING_CONFIG

from service.app import create_app
from service.services import own_data_dir
from service.settings import Settings


def ensure_data_dir_free(settings: Settings) -> None:
    """Fail early, with a clear message, when another service owns the data directory."""
    own_data_dir(settings).release()


def where_it_keeps_things(settings: Settings) -> str:
    """The start-up line: the data folder, the catalog and the queue, with any password hidden."""
    catalog = make_url(settings.catalog_url).render_as_string(hide_password=True)
    queue = "embedded (on the catalog)"
    if settings.redis_url:
        queue = f"Redis at {make_url(settings.redis_url).render_as_string(hide_password=True)}"
    return f"replaybank: data folder {settings.data_dir}\n  catalog: {catalog}\n  queue: {queue}"


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the service until interrupted. Says where it keeps its data first; a newly generated admin
    token is printed once at start-up."""
    settings = settings or Settings()
    ensure_data_dir_free(settings)
    print(where_it_keeps_things(settings), file=sys.stderr, flush=True)
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="info", log_config=_log_config(), timeout_graceful_shutdown=10
    )


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging, with the service's `replaybank.*` loggers beside it at INFO on the same stream."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["replaybank"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
