"""The browser session: a cookie holding the access token, and the CSRF check that goes with it.

A browser cannot attach `Authorization: Bearer` to `<img src>`, `<video src>` or an
`EventSource`, so after signing in on `/login` the same JWT access token lives in the HttpOnly
cookie `genstudio_session` (SameSite=Lax, Secure over HTTPS). A cookie is sent by the browser
on its own, also with requests another site makes it send, so it authenticates safe methods
(GET, HEAD) as it is, and unsafe ones only together with a CSRF token:

- The token is an HMAC of the session cookie's value under a key derived from the JWT secret,
  so it is bound to that session (a cookie planted from a sibling subdomain does not come with
  a matching token), needs no server-side state, and is worthless once the session ends.
  Pages carry it in `<meta name="csrf-token">`; scripts send it as the `X-CSRF-Token` header,
  forms as the field `csrf_token`.
- And the request's `Origin` (or, without one, its `Referer`) must be this site when present.

The sign-in form has no session yet; it is bound the same way to a random pre-session cookie
(`genstudio_login_nonce`), which stops a third-party site from signing a victim into an
account of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from genstudio.auth.errors import CsrfRejected

SESSION_COOKIE = "genstudio_session"
LOGIN_NONCE_COOKIE = "genstudio_login_nonce"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_NONCE_MAX_AGE = 3600


def csrf_key(jwt_secret: str) -> bytes:
    # A key of its own, so a CSRF token can never double as anything signed with the JWT secret.
    return hmac.new(jwt_secret.encode(), b"genstudio csrf v1", hashlib.sha256).digest()


def csrf_token(key: bytes, binding: str) -> str:
    """The CSRF token of one session (or sign-in nonce)."""
    return hmac.new(key, binding.encode(), hashlib.sha256).hexdigest()


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def check_same_origin(request: Request) -> None:
    """Refuse a request that says it comes from another site (Origin, else Referer)."""
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is not None and origin != _own_origin(request):
        raise CsrfRejected(f"this request comes from another site ({origin}); it was refused")


def check_csrf(request: Request, key: bytes, binding: str, submitted: str | None) -> None:
    check_same_origin(request)
    if not submitted or not hmac.compare_digest(submitted, csrf_token(key, binding)):
        raise CsrfRejected(
            f"a request signed in by the session cookie must carry the page's CSRF token in the "
            f"{CSRF_HEADER} header (or use Authorization: Bearer instead of the cookie)")


def set_session_cookie(response: Response, request: Request, token: str, expires_at: float) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max(0, int(expires_at - time.time())), path="/",
                        httponly=True, samesite="lax", secure=is_https(request))


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request))


def login_nonce(request: Request) -> tuple[str, bool]:
    """The sign-in form's nonce, and whether it is new (and must be set as a cookie)."""
    existing = request.cookies.get(LOGIN_NONCE_COOKIE)
    if existing and 16 <= len(existing) <= 100:
        return existing, False
    return secrets.token_urlsafe(24), True


def set_login_nonce_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(LOGIN_NONCE_COOKIE, nonce, max_age=LOGIN_NONCE_MAX_AGE, path="/login",
                        httponly=True, samesite="strict", secure=is_https(request))
