"""The app factory: settings in, a FastAPI app out. The lifespan owns the data directory and its services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from schemas.http import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from service.api import datasets, health, jobs, operators, policies, sweeps, tokens, workers
from service.api.ui import install_dashboard
from service.clock import Clock
from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.observability.metrics import ServiceMetrics
from service.observability.requests import RequestTelemetry
from service.services import open_services
from service.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """`clock`: what leases run on; the system's unless a test brings one it can move by hand."""
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with open_services(settings, metrics, clock) as services:
            app.state.services = services
            await services.sweeps.catch_up()  # evaluations a stop cut off between a job's completion and their submission
            sweeper = asyncio.create_task(services.protocol.sweep_silent_jobs(), name="replaybank-silent-job-sweeper")
            try:
                yield
            finally:
                sweeper.cancel()
                with suppress(asyncio.CancelledError):
                    await sweeper
                await services.queue.close()

    app = FastAPI(title="replaybank", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    install_docs(app)
    install_dashboard(app)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestTelemetry, metrics=metrics)  # added last: outside the size limit, so its answers get an id
    routers = (health, datasets, tokens, jobs, workers, policies, sweeps, operators)
    for module in routers:
        app.include_router(module.router)
    app.include_router(tokens.whoami_router)
    declare_request_id(app)
    return app


def declare_request_id(app: FastAPI) -> None:
    """Every answer carries `X-Request-ID` (`service.observability.requests`): the document says so on each."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            header = {
                "description": "the id the service logged this request under",
                "required": True,
                "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
            }
            for item in document["paths"].values():
                for operation in item.values():
                    for answer in operation.get("responses", {}).values():
                        answer.setdefault("headers", {})[REQUEST_ID_HEADER] = header
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` with their scripts served from the `fastapi-offline` package, so they
    work without the internet (FastAPI's own pages load them from a CDN)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
