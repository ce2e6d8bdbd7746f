"""Who is calling: the verified claims of the request's bearer token."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from genstudio.auth.errors import MissingToken

bearer = HTTPBearer(
    auto_error=False,
    description="A Supabase access token, or one from `POST /api/auth/login` / `genstudio token`.",
)


async def caller_claims(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
) -> dict[str, Any]:
    if credentials is None:
        raise MissingToken("sign in first: send the header Authorization: Bearer <access token>")
    verifier = request.app.state.token_verifier
    if (claims := verifier.cached(credentials.credentials)) is not None:
        return claims
    if verifier.needs_network(credentials.credentials):
        return await asyncio.to_thread(verifier.verify, credentials.credentials)
    return verifier.verify(credentials.credentials)
