"""A JWKS endpoint over real HTTP on a loopback ephemeral port, publishing an RSA, an EC (P-256)
and an OKP (Ed25519) key, as Supabase's `/auth/v1/.well-known/jwks.json` does.

Two of the published keys carry no `alg`, so the verifier must derive the algorithm from
`kty`/`crv` alone.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.api_support import AUDIENCE


def _public_jwk(algorithm: type, private_key: Any, **extra: str) -> dict:
    return {**json.loads(algorithm.to_jwk(private_key.public_key())), **extra}


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def sign(self, claims: dict, *, algorithm: str | None = None, headers: dict | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=algorithm or self.algorithm,
                          headers={"kid": self.kid, **(headers or {})})


@dataclass
class JwksServer:
    url: str
    keys: dict[str, SigningKey]
    requests: list[str] = field(default_factory=list)
    down: bool = False


def claims_for(user_id: uuid.UUID | str, **overrides: Any) -> dict:
    return {"sub": str(user_id), "role": "authenticated", "aud": AUDIENCE, "exp": int(time.time()) + 600,
            **overrides}


@pytest.fixture(scope="session")
def jwks_server() -> Iterator[JwksServer]:
    keys = {
        "rsa-1": SigningKey("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ec-1": SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        "ed-1": SigningKey("ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate()),
    }
    document = json.dumps({"keys": [
        _public_jwk(jwt.algorithms.RSAAlgorithm, keys["rsa-1"].private, kid="rsa-1", use="sig"),
        _public_jwk(jwt.algorithms.ECAlgorithm, keys["ec-1"].private, kid="ec-1", alg="ES256", use="sig"),
        _public_jwk(jwt.algorithms.OKPAlgorithm, keys["ed-1"].private, kid="ed-1"),
    ]}).encode()
    state: dict[str, JwksServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            server = state["server"]
            server.requests.append(self.path)
            if server.down:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["server"] = JwksServer(f"http://127.0.0.1:{httpd.server_port}/auth/v1/.well-known/jwks.json", keys)
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
