"""Token verification results are reused per token string, never past the token's expiry."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from genstudio.auth.errors import InvalidToken
from genstudio.auth.tokens import TokenIssuer, TokenVerifier

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def test_a_verified_token_is_reused_until_it_expires():
    verifier = TokenVerifier(SECRET, "authenticated")
    user = uuid.uuid4()
    token = jwt.encode({"sub": str(user), "role": "authenticated", "aud": "authenticated",
                        "exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
    assert verifier.cached(token) is None
    assert verifier.verify(token)["sub"] == str(user)
    assert verifier.cached(token)["sub"] == str(user)
    time.sleep(2.1)
    assert verifier.cached(token) is None
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


def test_refused_tokens_are_never_remembered():
    verifier = TokenVerifier(SECRET, "authenticated")
    forged = TokenIssuer("another-secret-of-sufficient-length-000000", "authenticated", 60).issue(uuid.uuid4(), "x@y")
    for _ in range(2):
        with pytest.raises(InvalidToken, match="signature"):
            verifier.verify(forged)
        assert verifier.cached(forged) is None
