"""Builds the FastAPI application around one database pool."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from genstudio import __version__
from genstudio.background import running_services
from genstudio.api import auth, events, feed, files, health, webhooks, workflows
from genstudio.api.errors import install_error_handlers
from genstudio.api.hot_reads import HotReads
from genstudio.events.hub import shared_hub
from genstudio.api.jobs import job_router
from genstudio.api.last_resort import LastResortErrors
from genstudio.api.limits import RequestBodyLimits
from genstudio.api.openapi import document_every_status
from genstudio.api.session import csrf_key
from genstudio.auth.ratelimit import LoginRateLimiter
from genstudio.auth.tokens import TokenIssuer, TokenVerifier, load_or_create_secret
from genstudio.comfy.runs import RunService
from genstudio.comfy.templates import templates_from_settings
from genstudio.config import Settings, get_settings
from genstudio.storage import storage_from_settings
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.db.pool import Database
from genstudio.web import install_web


def create_app(conninfo: str, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database(conninfo, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                  timeout=settings.pool_timeout_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.open()
        # What is loaded by now (the app, its routes and models) lives as long as the process:
        # moved out of the collector's reach, a full collection no longer walks it, which would
        # pause every open event stream for tens of milliseconds.
        gc.freeze()
        try:
            # One job event listener per process, shared by the SSE streams and the services.
            async with shared_hub(db) as hub:
                app.state.event_hub = hub
                if settings.run_background:
                    async with running_services(db, settings):
                        yield
                else:
                    yield
        finally:
            await db.close()

    # Swagger UI and ReDoc with their assets served from here (the fastapi-offline package ships
    # them), not from a CDN: the docs work on a studio network without internet.
    app = FastAPIOffline(
        title="genstudio",
        version=__version__,
        summary="Job store and API for generative-AI studios running ComfyUI workflows.",
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url="/api/redoc",
        static_url="/api/docs-assets",
        favicon_url="/api/docs-assets/favicon.png",
    )
    app.state.db = db
    app.state.settings = settings
    app.include_router(health.router)
    _add_jobs_api(app, settings)
    install_web(app)
    document_every_status(app)
    app.add_middleware(LastResortErrors)  # added last: the outermost, catching what the others raise
    return app


def _add_jobs_api(app: FastAPI, settings: Settings) -> None:
    secret = load_or_create_secret(settings)
    app.state.csrf_key = csrf_key(secret)
    app.state.token_verifier = TokenVerifier(secret, settings.jwt_audience, settings.jwks_url)
    app.state.token_issuer = TokenIssuer(secret, settings.jwt_audience, settings.access_token_ttl_seconds)
    app.state.login_limiter = LoginRateLimiter(settings.login_limit_per_address, settings.login_limit_per_account)
    install_error_handlers(app)
    # Inside the request limits: they apply to the plain reads too.
    app.add_middleware(HotReads, state=app.state, exception_handlers=app.exception_handlers)
    app.add_middleware(RequestBodyLimits, max_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes, upload_paths=workflows.UPLOAD_PATHS,
                       # a run may carry several input files; each is bounded again on its own
                       upload_max_bytes=4 * settings.upload_max_bytes + settings.max_body_bytes)
    for output_type in OUTPUT_TYPES.values():
        app.include_router(job_router(output_type))
        app.include_router(events.job_events_router(output_type))
    app.include_router(feed.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(auth.router)
    _add_workflows_api(app, settings, secret)


def _add_workflows_api(app: FastAPI, settings: Settings, secret: str) -> None:
    """Workflow templates, runs, uploads and the stored files (issue 7)."""
    app.state.templates = templates_from_settings(settings)
    app.state.storage = storage_from_settings(settings)
    app.state.run_service = RunService(settings, app.state.storage)
    app.state.file_signer = files.FileSigner(secret, settings.file_url_ttl_seconds)
    app.include_router(workflows.router)
    app.include_router(files.router)


def app_from_settings() -> FastAPI:
    """The app of one `genstudio serve --workers N` process, configured from the environment."""
    settings = get_settings()
    return create_app(settings.database_url, settings)
