"""Access tokens: verifying Supabase's (and our own), and issuing them for local accounts.

Supabase signs access tokens either with the project's shared secret (HS256) or with an
asymmetric key published at the project's JWKS URL. Local accounts get tokens with the same
claims Supabase puts in its own, signed with the shared secret, so the rest of genstudio (and
the database's `auth.uid()`) cannot tell the two apart.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

import jwt
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictFloat, StrictInt, ValidationError

from genstudio.auth.errors import InvalidToken, SigningKeysUnavailable
from genstudio.config import Settings

SYMMETRIC_ALGORITHM = "HS256"
# What a published (JWKS) key may sign with: the asymmetric families only. The algorithm used
# is the one the key itself declares (its `alg`, else what its `kty`/`crv` imply), never the
# one a token's header names: a header saying ES256 with the `kid` of an RSA key is refused.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "ES512", "EdDSA"})
SECRET_FILE_NAME = "jwt_secret"
JWKS_TIMEOUT_SECONDS = 10

logger = logging.getLogger(__name__)


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


def _canonical_uuid(value: str) -> str:
    # auth.uid() casts `sub` to uuid; only the canonical form (what Supabase issues) is
    # accepted, so one user has one spelling (no `urn:uuid:`, braces or upper case).
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = None
    if canonical != value:
        raise ValueError("the access token's subject is not a user id")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# Time claims are JSON numbers; a bool or a numeric string is refused, not coerced.
_Seconds = Annotated[StrictInt | StrictFloat, AfterValidator(_finite)]


class AccessTokenClaims(BaseModel):
    """The claims genstudio relies on, with the types Supabase gives them. Checked once, when a
    token is first verified, so nothing later (the cache, the database) meets a surprise."""

    model_config = ConfigDict(extra="allow", strict=True)
    sub: Annotated[str, AfterValidator(_canonical_uuid)]
    exp: _Seconds
    iat: _Seconds | None = None
    nbf: _Seconds | None = None
    aud: str | list[str]
    role: str = "authenticated"


def _nul_in(value: Any) -> bool:
    """Whether any string inside the claims holds U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_nul_in, value))
    return False


def _claims_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    claim = str((first.get("loc") or ("?",))[0])  # the claim itself, not the union member
    if first.get("type") == "missing":
        return f"the access token has no {claim!r} claim"
    if claim == "sub":
        return "the access token's subject is not a user id"
    return f"the access token's {claim!r} claim has the wrong type or value"


class TokenVerifier:
    # Clients send the same token with every request until it expires; checking its signature
    # again each time was an eighth of the server's work per request. A token string verified
    # once stays valid until its `exp`, which is checked on every use.
    _CACHE_SIZE = 10_000

    def __init__(self, secret: str, audience: str, jwks_url: str | None = None):
        self._secret = secret
        self._audience = audience
        self._jwks = (jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600, timeout=JWKS_TIMEOUT_SECONDS)
                      if jwks_url else None)
        # token -> (its `exp` as a float, its claims): validated types only, so comparing is safe.
        self._verified: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def cached(self, token: str) -> dict[str, Any] | None:
        """The claims of a token verified before and not expired since, else None."""
        entry = self._verified.get(token)
        if entry is not None and entry[0] > time.time():
            return entry[1]
        return None

    def needs_network(self, token: str) -> bool:
        """Whether verifying may fetch the JWKS (callers run that off the event loop)."""
        return self._jwks is not None and self._header_algorithm(token) != SYMMETRIC_ALGORITHM

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, once signature, algorithm, expiry, audience, subject and claim
        types check out. Any failure is an `InvalidToken` (401), whatever raised it."""
        try:
            key, algorithm = self._key_and_algorithm(token)
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self._audience,
                                options={"require": ["exp", "sub", "aud"]})
        except (InvalidToken, SigningKeysUnavailable):
            raise
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
        except Exception:
            # Whatever else PyJWT, cryptography or the JSON parser raise on a hostile token
            # (a key of another family, absurd nesting, numbers out of range) is still a
            # token that did not verify: a 401, never a 500.
            logger.warning("an access token failed verification unexpectedly", exc_info=True)
            raise InvalidToken("the access token could not be verified") from None
        exp = self._check_claims(claims)
        self._verified[token] = (exp, claims)
        if len(self._verified) > self._CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    @staticmethod
    def _header_algorithm(token: str) -> str:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except Exception:  # not base64, not JSON, nested past the parser's depth, ...
            raise InvalidToken("the bearer token is not a JWT") from None
        return algorithm if isinstance(algorithm, str) else repr(algorithm)

    def _key_and_algorithm(self, token: str) -> tuple[Any, str]:
        """The key to verify with and the one algorithm that key is used with. The header's
        `alg` only routes: HS256 to the shared secret, anything else to the published keys."""
        named = self._header_algorithm(token)
        if named == SYMMETRIC_ALGORITHM:
            return self._secret, SYMMETRIC_ALGORITHM
        if self._jwks is None:
            raise InvalidToken(f"access tokens signed with {named!r} are not accepted")
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("the access token names no published key (its header has no 'kid')")
        try:
            jwk = self._jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("the signing keys could not be fetched: %s", exc)
            raise SigningKeysUnavailable("the signing keys could not be fetched right now; try again shortly") from None
        except jwt.PyJWKClientError:
            raise InvalidToken("no published key verifies the access token (unknown 'kid')") from None
        if jwk.algorithm_name not in ASYMMETRIC_ALGORITHMS:
            raise InvalidToken(f"the published key {kid!r} is not an accepted signing key")
        if named != jwk.algorithm_name:
            raise InvalidToken(f"the access token says {named!r} but its key {kid!r} signs with "
                               f"{jwk.algorithm_name!r}")
        return jwk.key, jwk.algorithm_name

    @staticmethod
    def _check_claims(claims: dict[str, Any]) -> float:
        """Claim types, checked before the claims are remembered or reach the database; the
        token's expiry as a float."""
        try:
            checked = AccessTokenClaims.model_validate(claims)
        except ValidationError as exc:
            raise InvalidToken(_claims_problem(exc)) from None
        if _nul_in(claims):
            raise InvalidToken("the access token's claims contain the NUL character")
        if checked.role != "authenticated":
            raise InvalidToken("only signed-in users may use this API (the token's role is "
                               f"{checked.role!r})")
        return float(checked.exp)


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
