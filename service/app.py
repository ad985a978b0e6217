"""The app factory: settings in, a FastAPI app out. The lifespan owns the data directory and its services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from service.api import datasets, health, jobs, policies, tokens, workers
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
            sweeper = asyncio.create_task(services.protocol.sweep_silent_jobs(), name="replaybank-silent-job-sweeper")
            try:
                yield
            finally:
                sweeper.cancel()
                with suppress(asyncio.CancelledError):
                    await sweeper
                await services.queue.close()

    app = FastAPI(title="replaybank", version="1", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    for router in (health.router, datasets.router, tokens.router, jobs.router, workers.router, policies.router):
        app.include_router(router)
    return app
