"""Builds the FastAPI application around one database pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from genstudio import __version__
from genstudio.api import health
from genstudio.config import Settings, get_settings
from genstudio.db.pool import Database


def create_app(conninfo: str, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database(conninfo, min_size=settings.pool_min_size, max_size=settings.pool_max_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.open()
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(
        title="genstudio",
        version=__version__,
        summary="Job store and API for generative-AI studios running ComfyUI workflows.",
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.db = db
    app.state.settings = settings
    app.include_router(health.router)
    return app
