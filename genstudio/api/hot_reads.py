"""The hot reads — the feed, job lists and one job by id — answered without FastAPI's
per-request machinery, when the request is a plain one.

Routing a request through FastAPI (matching it against every route in turn, solving the
caller dependency and its two security schemes, validating each query parameter through
pydantic, the exception and exit-stack middleware) cost a page read about as much CPU as the
database spent on it. These reads are what clients poll, so a request that is plainly valid —
a `GET` with a bearer token already verified, parameters whose values are unmistakably within
their declared bounds — is answered here, through the very functions the FastAPI routes
answer with (genstudio.api.jobs / genstudio.api.feed), in the same transaction as the same
caller. Everything else (no token or a cookie, a token not yet verified, a parameter that is
empty where a number is due, out of bounds or merely unusual in form, another method or path)
goes on to FastAPI untouched, which answers it exactly as before; the routes stay declared
there, so the OpenAPI document is unchanged. Errors raised here are answered by the app's own
exception handlers, so they read exactly as FastAPI's answers would.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from genstudio.api import feed, jobs
from genstudio.jobs.output_types import OUTPUT_TYPES, STATUSES
from genstudio.jobs.service import JobService

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SCOPES = ("mine", "all")


class NotPlain(Exception):
    """The request is not one this path answers; FastAPI will."""


def _integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or not low <= int(text) <= high:
        raise NotPlain
    return int(text)


def _text(params: Mapping[str, str], name: str, max_length: int) -> str | None:
    text = params.get(name)
    if text is not None and len(text) > max_length:
        raise NotPlain
    return text


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str | None) -> Any:
    text = params.get(name, default)
    if text is not None and text not in choices:
        raise NotPlain
    return text


def _query_params(scope: Scope) -> dict[str, str]:
    # As Starlette reads them (the last of repeated names wins, as in FastAPI's scalar parameters).
    return dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))


def _one_header(scope: Scope, name: bytes) -> str | None:
    values = [value for key, value in scope["headers"] if key == name]
    if len(values) > 1:
        raise NotPlain
    return values[0].decode("latin-1") if values else None


class HotReads:
    """ASGI middleware in front of the FastAPI routes (inside the request limits and the last
    resort error handler, which apply to these requests as to every other)."""

    def __init__(self, app: ASGIApp, *, state: Any, exception_handlers: Mapping[Any, Callable[..., Any]]):
        self.app = app
        self.state = state  # the app's: db, token_verifier
        self.exception_handlers = exception_handlers  # the app's, looked up when an error occurs
        self.lists: dict[str, JobService] = {f"/api/{t.path}": jobs.SERVICES[name] for name, t in OUTPUT_TYPES.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and (read := self.route(scope)) is not None:
            try:
                response = await read()
            except NotPlain:  # raised before anything was read or sent
                await self.app(scope, receive, send)
                return
            except Exception as exc:
                response = await self.handled(scope, receive, exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def route(self, scope: Scope) -> Callable[[], Awaitable[Response]] | None:
        path: str = scope["path"]
        if path == "/api/feed":
            return partial(self.feed, scope)
        if (service := self.lists.get(path)) is not None:
            return partial(self.list, scope, service)
        head, _, job_id = path.rpartition("/")
        if (service := self.lists.get(head)) is not None and _UUID.fullmatch(job_id):
            return partial(self.one, scope, service, uuid.UUID(job_id))
        return None

    def claims(self, scope: Scope) -> dict[str, Any]:
        """The caller's claims, from a bearer token verified before (as caller_claims reads it)."""
        authorization = _one_header(scope, b"authorization")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotPlain  # no token, a cookie, another scheme: caller_claims decides
        claims = self.state.token_verifier.cached(token.strip())
        if claims is None:
            raise NotPlain  # verified (and remembered) by caller_claims on its first use
        return claims

    async def feed(self, scope: Scope) -> Response:
        claims = self.claims(scope)
        params = _query_params(scope)
        query = feed.feed_query(
            limit=_integer(params, "limit", 50, 1, jobs.MAX_LIMIT),
            cursor=_text(params, "cursor", jobs.MAX_CURSOR),
            scope=_choice(params, "scope", _SCOPES, "mine"),
            types=_text(params, "types", feed.MAX_TYPES),
            workflow_name=_text(params, "workflow_name", jobs.MAX_FILTER),
            status=_choice(params, "status", STATUSES, None),
        )
        return await feed.feed_page(self.state.db, claims, query)

    async def list(self, scope: Scope, service: JobService) -> Response:
        claims = self.claims(scope)
        params = _query_params(scope)
        prefer = _one_header(scope, b"prefer")
        if prefer is not None and len(prefer) > jobs.MAX_PREFER:
            raise NotPlain
        count = jobs.preferred_count(prefer)
        query = jobs.page_query(
            limit=_integer(params, "limit", 50, 1, jobs.MAX_LIMIT),
            offset=_integer(params, "offset", 0, 0, jobs.MAX_OFFSET),
            cursor=_text(params, "cursor", jobs.MAX_CURSOR),
            workflow_name=_text(params, "workflow_name", jobs.MAX_FILTER),
            status=_choice(params, "status", STATUSES, None),
            scope=_choice(params, "scope", _SCOPES, "mine"),
            count=count,
        )
        return await jobs.list_page(self.state.db, service, claims, query, count)

    async def one(self, scope: Scope, service: JobService, job_id: uuid.UUID) -> Response:
        return await jobs.one_job(self.state.db, service, self.claims(scope), job_id)

    async def handled(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The answer of the app's own handler for this exception (as Starlette's
        ExceptionMiddleware finds it); without one, it goes on to the last resort."""
        for kind in type(exc).__mro__:
            if (handler := self.exception_handlers.get(kind)) is not None:
                response = handler(Request(scope, receive), exc)
                return await response if inspect.isawaitable(response) else response
        raise exc
