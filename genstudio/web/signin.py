"""Signing in and out of the web UI, and the dependency that sends signed-out visitors to `/login`.

The session cookie holds the same access token `POST /api/auth/login` returns (or a Supabase
access token pasted on the sign-in page), so the API and the pages accept exactly the same
sessions; see genstudio/api/session.py for the cookie and its CSRF check.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from genstudio.api.caller import verified_claims
from genstudio.api.session import (
    CSRF_FIELD,
    LOGIN_NONCE_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    clear_session_cookie,
    csrf_token,
    login_nonce,
    set_login_nonce_cookie,
    set_session_cookie,
)
from genstudio.auth.accounts import authenticate
from genstudio.auth.errors import AuthError, CsrfRejected, InvalidCredentials, InvalidToken, LoginRateLimited
from genstudio.web.rendering import render

router = APIRouter(include_in_schema=False)


class SignInRequired(Exception):
    """A page was asked for without a valid session."""


async def page_claims(request: Request) -> dict[str, Any]:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    try:
        return await verified_claims(request, token)
    except InvalidToken:
        raise SignInRequired from None


PageClaims = Annotated[dict[str, Any], Depends(page_claims)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\n" in target or "\r" in target:
        return "/"
    return target


def _back_to_login(request: Request, exc: SignInRequired) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    if request.cookies.get(SESSION_COOKIE):  # expired or no longer valid: forget it
        clear_session_cookie(response, request)
    return response


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, _back_to_login)


def supabase_configured(request: Request) -> bool:
    settings = request.app.state.settings
    return bool(settings.jwks_url or settings.jwt_secret)


def _login_page(request: Request, next_path: str, *, error: str = "", email: str = "",
                status_code: int = 200) -> Response:
    nonce, new = login_nonce(request)
    response = render(request, "login.html", None, status_code,
                      next=next_path, error=error, email=email, supabase=supabase_configured(request),
                      login_csrf=csrf_token(request.app.state.csrf_key, nonce))
    if new:
        set_login_nonce_cookie(response, request, nonce)
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    try:
        await page_claims(request)
    except SignInRequired:
        return _login_page(request, safe_next(next))
    return RedirectResponse(safe_next(next), status_code=303)  # already signed in


@router.post("/login")
async def login(request: Request,
                csrf_token_field: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
                email: Annotated[str, Form(max_length=320)] = "",
                password: Annotated[str, Form(max_length=1024)] = "",
                access_token: Annotated[str, Form(max_length=20_000)] = "",
                next: Annotated[str, Form(max_length=2_000)] = "/") -> Response:
    next_path = safe_next(next)
    try:
        check_csrf(request, request.app.state.csrf_key, request.cookies.get(LOGIN_NONCE_COOKIE) or "",
                   csrf_token_field)
    except CsrfRejected:
        return _login_page(request, next_path, email=email, status_code=403,
                           error="The sign-in form expired or came from another site. Please try again.")
    try:
        token, expires_at = await _sign_in(request, email, password, access_token)
    except LoginRateLimited as exc:
        response = _login_page(request, next_path, email=email, error=exc.message[0].upper() + exc.message[1:] + ".",
                               status_code=429)
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
        return response
    except AuthError as exc:
        status = 401 if isinstance(exc, (InvalidCredentials, InvalidToken)) else 400
        return _login_page(request, next_path, email=email, status_code=status,
                           error=exc.message[0].upper() + exc.message[1:] + ".")
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(response, request, token, expires_at)
    return response


async def _sign_in(request: Request, email: str, password: str, access_token: str) -> tuple[str, float]:
    """The session's token and its expiry, from a local account or a Supabase access token."""
    if access_token.strip():
        claims = await verified_claims(request, access_token.strip())
        return access_token.strip(), float(claims["exp"])
    if not email.strip() or not password:
        raise InvalidCredentials("enter your email and your password")
    address = request.client.host if request.client else "unknown"
    request.app.state.login_limiter.hit(address, email)
    async with request.app.state.db.as_owner() as conn:
        account = await authenticate(conn, email, password)
    issuer = request.app.state.token_issuer
    token = issuer.issue(account.id, account.email)
    claims = await verified_claims(request, token)
    return token, float(claims["exp"])


@router.post("/logout")
async def logout(request: Request,
                 csrf_token_field: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "") -> Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        try:
            check_csrf(request, request.app.state.csrf_key, session, csrf_token_field)
        except CsrfRejected:
            return RedirectResponse("/", status_code=303)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, request)
    return response
