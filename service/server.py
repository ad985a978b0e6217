"""`replaybank serve`: uvicorn on the app factory."""

from __future__ import annotations

import sys

import uvicorn
from sqlalchemy.engine import make_url

from service.app import create_app
from service.observability.logs import log_config
from service.services import own_data_dir
from service.settings import Settings


def ensure_data_dir_free(settings: Settings) -> None:
    """Fail early, with a clear message, when another service owns the data directory."""
    own_data_dir(settings).release()


def where_it_keeps_things(settings: Settings) -> str:
    """The start-up lines: the data folder, the object storage (if any), the catalog, the queue (any password
    hidden) and the log format."""
    catalog = make_url(settings.catalog_url).render_as_string(hide_password=True)
    queue = "embedded (on the catalog)"
    if settings.redis_url:
        queue = f"Redis at {make_url(settings.redis_url).render_as_string(hide_password=True)}"
    logs = "JSON lines (REPLAYBANK_LOG_FORMAT=text for plain text)" if settings.log_format == "json" else "plain text"
    storage = f"\n  storage: {settings.storage_url} at {settings.aws_endpoint_url or 'AWS'}" if settings.storage_url else ""
    return f"replaybank: data folder {settings.data_dir}{storage}\n  catalog: {catalog}\n  queue: {queue}\n  logs: {logs}"


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the service until interrupted. Says where it keeps its data first; a newly generated admin
    token is printed once at start-up."""
    settings = settings or Settings()
    ensure_data_dir_free(settings)
    print(where_it_keeps_things(settings), file=sys.stderr, flush=True)
    # the service writes its own access line (`replaybank.access`, with the request id and route), so not uvicorn
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        log_config=log_config(settings.log_format),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
