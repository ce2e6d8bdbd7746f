"""Issue 11, items 1 and 2: with published keys (JWKS, served over real HTTP) a token is checked
with the algorithm of the key it names, never the one its header claims; claim types are
checked once, up front; every failure is a 401 in the usual JSON shape, never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from genstudio.api.app import create_app
from tests.api_support import SECRET, Api, image_payload, make_settings, table_snapshot
from tests.security_support import api  # noqa: F401  (fixture)
from tests.jwks_support import JwksServer, claims_for, jwks_server  # noqa: F401


@pytest.fixture
async def jwks_api(db_url, tmp_path, jwks_server) -> AsyncIterator[Api]:
    app = create_app(db_url, make_settings(tmp_path, jwks_url=jwks_server.url, run_background=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, db_url)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _hs256_signed_with(key: bytes, claims: dict, header: dict) -> str:
    """An HS256 token whose HMAC key is `key`: PyJWT refuses to make one with a PEM key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _assert_refused(api: Api, token: str, words: str = "") -> None:
    """Refused as a 401 JSON on every use (a cached success or a 500 on reuse is the bug)."""
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(2):
        for method, url, body in (("GET", "/api/feed", None), ("POST", "/api/image-jobs", image_payload())):
            r = await api.client.request(method, url, json=body, headers=headers)
            assert r.status_code == 401, (r.status_code, r.text)
            assert r.headers["content-type"] == "application/json"
            assert r.json()["success"] is False and words in r.json()["error"], r.json()
            assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
async def test_each_published_key_family_signs_valid_tokens(jwks_api, jwks_server, kid):
    alice = jwks_api.user("alice")
    token = jwks_server.keys[kid].sign(claims_for(alice.id))
    headers = {"Authorization": f"Bearer {token}"}
    created = await jwks_api.client.post("/api/image-jobs", json=image_payload(), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["image_job"]["user_id"] == str(alice.id)
    assert (await jwks_api.client.get("/api/feed", headers=headers)).json()["items"][0]["user_id"] == str(alice.id)
    # The shared secret keeps working beside the published keys.
    assert (await jwks_api.client.get("/api/feed", headers=alice.headers)).status_code == 200


def _mismatches(keys) -> dict[str, str]:
    """Tokens whose header names an algorithm that does not fit the key its `kid` names."""
    rsa_pem = keys["rsa-1"].private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    user = uuid.uuid4()
    stranger_ec = ec.generate_private_key(ec.SECP256R1())
    return {
        # The probe's finding: a plain-text 500.
        "ES256 header, RSA kid": jwt.encode(claims_for(user), stranger_ec, algorithm="ES256", headers={"kid": "rsa-1"}),
        "EdDSA header, RSA kid": jwt.encode(claims_for(user), keys["ed-1"].private, algorithm="EdDSA",
                                            headers={"kid": "rsa-1"}),
        "RS256 header, EC kid": jwt.encode(claims_for(user), keys["rsa-1"].private, algorithm="RS256",
                                           headers={"kid": "ec-1"}),
        "PS256 with the RSA key itself": keys["rsa-1"].sign(claims_for(user), algorithm="PS256"),
        "ES384 header, P-256 kid": jwt.encode(claims_for(user), ec.generate_private_key(ec.SECP384R1()),
                                              algorithm="ES384", headers={"kid": "ec-1"}),
        "EdDSA header, EC kid": jwt.encode(claims_for(user), keys["ed-1"].private, algorithm="EdDSA",
                                           headers={"kid": "ec-1"}),
        "HS256 keyed with the RSA public key": _hs256_signed_with(rsa_pem, claims_for(user),
                                                                  {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
        "HS384 keyed with the shared secret": jwt.encode(claims_for(user), SECRET, algorithm="HS384",
                                                         headers={"kid": "rsa-1"}),
        "unknown kid": jwt.encode(claims_for(user), keys["rsa-1"].private, algorithm="RS256",
                                  headers={"kid": "rsa-404"}),
        "no kid": jwt.encode(claims_for(user), keys["rsa-1"].private, algorithm="RS256"),
        "kid is a list": _hs256_signed_with(b"any", claims_for(user), {"alg": "RS256", "kid": ["rsa-1"]}),
        "kid is an object": _hs256_signed_with(b"any", claims_for(user), {"alg": "ES256", "kid": {"a": 1}}),
        "another RSA key under the published kid": jwt.encode(
            claims_for(user), rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256", headers={"kid": "rsa-1"}),
    }


async def test_a_header_algorithm_that_does_not_fit_its_key_is_a_401(jwks_api, jwks_server):
    before = table_snapshot(jwks_api.db_url)
    for case, token in _mismatches(jwks_server.keys).items():
        try:
            await _assert_refused(jwks_api, token)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from None
    assert table_snapshot(jwks_api.db_url) == before


async def test_unreachable_signing_keys_are_a_503_not_a_refusal_or_a_crash(db_url, tmp_path, jwks_server):
    app = create_app(db_url, make_settings(tmp_path, jwks_url=jwks_server.url, run_background=False))
    token = jwks_server.keys["ec-1"].sign(claims_for(uuid.uuid4()))
    jwks_server.down = True
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                r = await client.get("/api/feed", headers={"Authorization": f"Bearer {token}"})
    finally:
        jwks_server.down = False
    assert r.status_code == 503 and r.json() == {
        "success": False, "error": "the signing keys could not be fetched right now; try again shortly"}
    assert r.headers["retry-after"]


def _hs256(claims: dict) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _wrong_claims(user: uuid.UUID) -> dict[str, tuple[str, str]]:
    """Correctly signed tokens whose claims have the wrong types: (token, words of the error)."""
    far = int(time.time()) + 600
    return {
        "exp as a numeric string": (_hs256(claims_for(user, exp=str(far))), "'exp'"),
        "exp as a boolean": (_hs256(claims_for(user, exp=True)), ""),
        "exp infinite": (_hs256(claims_for(user, exp=float("inf"))), ""),
        "iat as a string": (_hs256(claims_for(user, iat=str(int(time.time())))), "'iat'"),
        "nbf as a string": (_hs256(claims_for(user, nbf="0")), "'nbf'"),
        "sub as urn:uuid": (_hs256(claims_for(f"urn:uuid:{user}")), "subject"),
        "sub in braces": (_hs256(claims_for(f"{{{user}}}")), "subject"),
        "sub in upper case": (_hs256(claims_for(str(user).upper())), "subject"),
        "sub without hyphens": (_hs256(claims_for(user.hex)), "subject"),
        "sub as a number": (_hs256({**claims_for(user), "sub": user.int}), ""),
        "sub with NUL": (_hs256(claims_for(f"{user}\x00")), "subject"),
        "email with NUL": (_hs256(claims_for(user, email="a\x00@example.com")), "NUL"),
        "nested claim with NUL": (_hs256(claims_for(user, app_metadata={"provider": "x\x00"})), "NUL"),
        "claim name with NUL": (_hs256(claims_for(user, **{"x\x00": 1})), "NUL"),
        "role as a list": (_hs256(claims_for(user, role=["authenticated"])), "'role'"),
        "role service_role": (_hs256(claims_for(user, role="service_role")), "role"),
        "aud as a number": (_hs256(claims_for(user, aud=1)), ""),
    }


async def test_claims_of_the_wrong_type_are_a_401_on_every_use(api):
    alice = api.user("alice")
    before = table_snapshot(api.db_url)
    for case, (token, words) in _wrong_claims(alice.id).items():
        try:
            await _assert_refused(api, token, words)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from None
    assert table_snapshot(api.db_url) == before
    # Refusals are never remembered; the genuine token still works.
    assert (await api.client.get("/api/feed", headers=alice.headers)).status_code == 200

