"""Who is calling: the verified claims of the request's access token.

The token comes from `Authorization: Bearer` (API clients) or from the browser's session cookie
(`genstudio/api/session.py`): as it is for safe methods, and with a CSRF check for the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from genstudio.api.session import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, check_csrf
from genstudio.auth.errors import MissingToken

bearer = HTTPBearer(
    auto_error=False,
    description="A Supabase access token, or one from `POST /api/auth/login` / `genstudio token`.",
)
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The web UI's session (set by signing in on `/login`); unsafe methods also need "
                f"the page's CSRF token in `{CSRF_HEADER}`.",
)


async def caller_claims(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    cookie: str | None = Security(session_cookie),
) -> dict[str, Any]:
    if credentials is not None:
        token = credentials.credentials
    elif cookie:
        if request.method not in SAFE_METHODS:
            check_csrf(request, request.app.state.csrf_key, cookie, request.headers.get(CSRF_HEADER))
        token = cookie
    else:
        raise MissingToken("sign in first: send the header Authorization: Bearer <access token>")
    return await verified_claims(request, token)


async def verified_claims(request: Request, token: str) -> dict[str, Any]:
    verifier = request.app.state.token_verifier
    if (claims := verifier.cached(token)) is not None:
        return claims
    if verifier.needs_network(token):
        return await asyncio.to_thread(verifier.verify, token)
    return verifier.verify(token)
