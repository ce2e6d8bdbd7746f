"""Authentication: which bearer tokens are accepted, local accounts, login throttling, the CLI."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from genstudio.api.app import create_app
from genstudio.auth.tokens import TokenVerifier, load_or_create_secret
from genstudio.config import Settings
from tests.api_support import AUDIENCE, SECRET, api, image_payload, make_settings, table_snapshot  # noqa: F401


def _token(claims: dict, key=SECRET, algorithm="HS256", headers=None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _claims(user_id, **overrides) -> dict:
    return {"sub": str(user_id), "role": "authenticated", "aud": AUDIENCE, "exp": int(time.time()) + 600, **overrides}


def _unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "malformed": (lambda uid: "not-a-jwt", "not a JWT"),
    "expired": (lambda uid: _token(_claims(uid, exp=int(time.time()) - 60)), "expired"),
    "wrong key": (lambda uid: _token(_claims(uid), key="another-secret-that-is-also-long-enough"), "signature"),
    "wrong audience": (lambda uid: _token(_claims(uid, aud="someone-else")), "audience"),
    "alg none": (lambda uid: _unsigned(_claims(uid)), "'none'"),
    "no exp": (lambda uid: _token({k: v for k, v in _claims(uid).items() if k != "exp"}), "'exp'"),
    "subject not a uuid": (lambda uid: _token(_claims("alice")), "subject"),
    "anon role": (lambda uid: _token(_claims(uid, role="anon")), "role"),
    "HS512": (lambda uid: _token(_claims(uid), algorithm="HS512"), "HS512"),
}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 case's key
@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_and_write_nothing(api, case):
    alice = api.user("alice")
    make, words = BAD_TOKENS[case]
    headers = {"Authorization": f"Bearer {make(alice.id)}"}
    before = table_snapshot(api.db_url)
    for method, url, body in (("POST", "/api/image-jobs", image_payload()), ("GET", "/api/image-jobs", None),
                              ("GET", "/api/feed", None)):
        r = await api.client.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (case, r.text)
        assert r.json()["success"] is False and words in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert table_snapshot(api.db_url) == before


@pytest.mark.parametrize("method,url", [
    ("POST", "/api/video-jobs"), ("GET", "/api/text-jobs"), ("GET", f"/api/image-jobs/{uuid.uuid4()}"),
    ("PUT", f"/api/image-jobs/{uuid.uuid4()}/complete"), ("POST", f"/api/video-jobs/{uuid.uuid4()}/cancel"),
    ("DELETE", f"/api/text-jobs/{uuid.uuid4()}"), ("GET", "/api/feed"),
    ("GET", "/api/image-jobs/by-comfy-id/x"), ("PUT", f"/api/image-jobs/{uuid.uuid4()}"),
])
async def test_every_job_endpoint_needs_a_token(api, method, url):
    r = await api.client.request(method, url, json={"status": "completed"} if method == "PUT" else None)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]


async def test_es256_tokens_verify_through_jwks(monkeypatch):
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwks = {"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}
    verifier = TokenVerifier(SECRET, AUDIENCE, "https://project.supabase.co/auth/v1/.well-known/jwks.json")
    monkeypatch.setattr(verifier._jwks, "fetch_data", lambda: jwks)  # no network in tests: the JWKS document
    user_id = uuid.uuid4()
    good = _token(_claims(user_id), key=private, algorithm="ES256", headers={"kid": "k1"})
    assert verifier.verify(good)["sub"] == str(user_id)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(Exception, match="signature"):
        verifier.verify(_token(_claims(user_id), key=other, algorithm="ES256", headers={"kid": "k1"}))
    without_jwks = TokenVerifier(SECRET, AUDIENCE)
    with pytest.raises(Exception, match="ES256"):
        without_jwks.verify(good)


async def test_login_issues_supabase_shaped_tokens(db_url, tmp_path):
    app = create_app(db_url, make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        async with app.state.db.as_owner() as conn:
            from genstudio.auth.accounts import add_account
            account = await add_account(conn, "Carol@Example.com", "correct horse")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.post("/api/auth/login", json={"email": "carol@example.com", "password": "correct horse"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["token_type"] == "bearer" and body["expires_in"] == 3600
            claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], audience="authenticated")
            assert claims["sub"] == str(account.id) and claims["role"] == "authenticated"
            assert claims["email"] == "carol@example.com" and claims["exp"] > time.time()
            headers = {"Authorization": f"Bearer {body['access_token']}"}
            created = await client.post("/api/image-jobs", json=image_payload(), headers=headers)
            assert created.status_code == 201 and created.json()["image_job"]["user_id"] == str(account.id)

            wrong = await client.post("/api/auth/login", json={"email": "carol@example.com", "password": "nope"})
            unknown = await client.post("/api/auth/login", json={"email": "dave@example.com", "password": "x"})
            assert wrong.status_code == unknown.status_code == 401
            assert wrong.json()["error"] == unknown.json()["error"] == "the email or the password is wrong"


async def test_login_is_rate_limited_per_account_and_per_address(db_url, tmp_path):
    settings = make_settings(tmp_path, login_limit_per_account="3/minute", login_limit_per_address="5/minute")
    app = create_app(db_url, settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            codes = [(await client.post("/api/auth/login", json={"email": "eve@example.com", "password": "x"})).status_code
                     for _ in range(4)]
            assert codes == [401, 401, 401, 429]
            # Another account from the same address: the address limit (5) is what stops it now.
            other = [(await client.post("/api/auth/login", json={"email": "fay@example.com", "password": "x"}))
                     for _ in range(2)]
            assert [r.status_code for r in other] == [401, 429]
            assert "address" in other[-1].json()["error"] and int(other[-1].headers["retry-after"]) >= 1


def test_secret_is_generated_once_and_kept_private(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", jwt_secret=None)
    first = load_or_create_secret(settings)
    assert len(first) >= 32 and load_or_create_secret(settings) == first
    assert stat.S_IMODE((tmp_path / "data" / "jwt_secret").stat().st_mode) == 0o600
    assert load_or_create_secret(Settings(data_dir=tmp_path, jwt_secret="configured-secret")) == "configured-secret"


def test_cli_user_add_and_token(db_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": db_url, "GENSTUDIO_DATA_DIR": str(tmp_path), "GENSTUDIO_JWT_SECRET": SECRET}
    cli = [sys.executable, "-c", "from genstudio.cli import app; app()"]
    added = subprocess.run(cli + ["user", "add", "gus@example.com"], input="s3cret-and-long-enough\n", env=env,
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    again = subprocess.run(cli + ["user", "add", "gus@example.com"], input="s3cret-and-long-enough\n", env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr
    issued = subprocess.run(cli + ["token", "gus@example.com"], env=env, capture_output=True, text=True, timeout=60)
    assert issued.returncode == 0, issued.stderr
    claims = jwt.decode(issued.stdout.strip(), SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["email"] == "gus@example.com" and added.stdout.strip().endswith(f"({claims['sub']})")
    missing = subprocess.run(cli + ["token", "nobody@example.com"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no account" in missing.stderr
