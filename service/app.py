"""The app factory: settings in, a FastAPI app out. The lifespan owns the data directory and its services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.api import datasets, health, jobs, policies, sweeps, tokens, workers
from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.services import open_services
from service.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with open_services(settings) as services:
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
    install_docs(app)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    for router in (health.router, datasets.router, tokens.router, jobs.router, workers.router, policies.router, sweeps.router):
        app.include_router(router)
    return app


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
