"""Access tokens: verifying Supabase's (and our own), and issuing them for local accounts.

Supabase signs access tokens either with the project's shared secret (HS256) or with an
asymmetric key published at the project's JWKS URL. Local accounts get tokens with the same
claims Supabase puts in its own, signed with the shared secret, so the rest of genstudio (and
the database's `auth.uid()`) cannot tell the two apart.
"""

from __future__ import annotations

import os
from collections import OrderedDict
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from genstudio.auth.errors import InvalidToken
from genstudio.config import Settings

SYMMETRIC_ALGORITHM = "HS256"
# What Supabase's asymmetric signing keys use; `none` and the HMAC family never go through JWKS.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
SECRET_FILE_NAME = "jwt_secret"


def load_or_create_secret(settings: Settings) -> str:
    """The configured secret, else one generated once and kept in the data directory, so that
    a fresh machine needs no configuration and tokens survive restarts."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = Path(settings.data_dir) / SECRET_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class TokenVerifier:
    # Clients send the same token with every request until it expires; checking its signature
    # again each time was an eighth of the server's work per request. A token string verified
    # once stays valid until its `exp`, which is checked on every use.
    _CACHE_SIZE = 10_000

    def __init__(self, secret: str, audience: str, jwks_url: str | None = None):
        self._secret = secret
        self._audience = audience
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600) if jwks_url else None
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def cached(self, token: str) -> dict[str, Any] | None:
        """The claims of a token verified before and not expired since, else None."""
        claims = self._verified.get(token)
        if claims is not None and claims["exp"] > time.time():
            return claims
        return None

    def needs_network(self, token: str) -> bool:
        """Whether verifying may fetch the JWKS (callers run that off the event loop)."""
        return self._jwks is not None and self._algorithm(token) in ASYMMETRIC_ALGORITHMS

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once signature, algorithm, expiry, audience and subject check out."""
        algorithm = self._algorithm(token)
        key = self._key(token, algorithm)
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self._audience,
                                options={"require": ["exp", "sub", "aud"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the access token has expired; sign in again") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"the access token is not meant for this API (audience must be {self._audience!r})") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the access token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the access token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"the access token is not valid: {exc}") from None
        self._check_subject(claims)
        self._verified[token] = claims
        if len(self._verified) > self._CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    @staticmethod
    def _algorithm(token: str) -> str:
        try:
            return str(jwt.get_unverified_header(token).get("alg"))
        except jwt.InvalidTokenError:
            raise InvalidToken("the bearer token is not a JWT") from None

    def _key(self, token: str, algorithm: str) -> Any:
        if algorithm == SYMMETRIC_ALGORITHM:
            return self._secret
        if algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as exc:
                raise InvalidToken(f"no published key verifies the access token: {exc}") from None
        raise InvalidToken(f"access tokens signed with {algorithm!r} are not accepted")

    @staticmethod
    def _check_subject(claims: dict[str, Any]) -> None:
        # auth.uid() casts `sub` to uuid; anything else would fail inside the database.
        try:
            uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise InvalidToken("the access token's subject is not a user id") from None
        if claims.get("role", "authenticated") != "authenticated":
            raise InvalidToken("only signed-in users may use this API (the token's role is "
                               f"{claims.get('role')!r})")


class TokenIssuer:
    def __init__(self, secret: str, audience: str, ttl_seconds: int):
        self._secret = secret
        self._audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: uuid.UUID, email: str) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "role": "authenticated",
            "aud": self._audience,
            "email": email,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": "genstudio",
        }
        return jwt.encode(claims, self._secret, algorithm=SYMMETRIC_ALGORITHM)
