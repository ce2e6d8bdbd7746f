"""`/api/auth/login`: access tokens for local accounts, shaped like Supabase's."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from genstudio.auth.accounts import authenticate

router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/login", summary="Sign in with a local account",
             responses={401: {"description": "Wrong email or password"}, 429: {"description": "Too many attempts"}})
async def login(body: LoginRequest, request: Request) -> TokenResponse:
    address = request.client.host if request.client else "unknown"
    request.app.state.login_limiter.hit(address, body.email)
    async with request.app.state.db.as_owner() as conn:
        account = await authenticate(conn, body.email, body.password)
    issuer = request.app.state.token_issuer
    return TokenResponse(access_token=issuer.issue(account.id, account.email), expires_in=issuer.ttl_seconds)
