"""The last resort: an exception no handler knows still answers in the API's JSON error shape.

Without it Starlette answers a bare `Internal Server Error` in plain text, which the guide's
client (and any JSON client) cannot parse. A plain ASGI middleware, placed outermost, so that it
also catches what other middleware raises; it logs the traceback once and does not re-raise
(Starlette's own last handler would log it a second time).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genstudio.api.errors import error_response

log = logging.getLogger("genstudio.api")

MESSAGE = "internal error: the server could not handle this request; it has been logged"


class LastResortErrors:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if response_started:  # too late for another response: the client sees a cut one
                return
            await error_response(500, MESSAGE)(scope, receive, send)
