"""Fixtures for driving the real API: the app with its lifespan over httpx, users and tokens.

Test modules import the fixtures they use from here (tests/conftest.py is shared).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from genstudio.api.app import create_app
from genstudio.auth.tokens import TokenIssuer
from genstudio.config import Settings

SECRET = "genstudio-test-secret-that-is-long-enough-for-hs256"
AUDIENCE = "authenticated"


@dataclass
class User:
    id: uuid.UUID
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_settings(tmp_path, **overrides) -> Settings:
    values = {"jwt_secret": SECRET, "data_dir": tmp_path, "pool_min_size": 1, "pool_max_size": 8, **overrides}
    return Settings(**values)


def add_user(db_url: str, email: str) -> User:
    with psycopg.connect(db_url) as conn:
        user_id = conn.execute("INSERT INTO auth.users (email) VALUES (%s) RETURNING id", (email,)).fetchone()[0]
    return User(user_id, email, TokenIssuer(SECRET, AUDIENCE, 3600).issue(user_id, email))


def count_jobs(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0]
                for t in ("video_jobs", "image_jobs", "text_jobs")}


def table_snapshot(db_url: str) -> list[tuple]:
    """Every job row, for asserting that a refused request wrote nothing."""
    with psycopg.connect(db_url) as conn:
        rows = []
        for t in ("video_jobs", "image_jobs", "text_jobs"):
            rows += conn.execute(f"SELECT '{t}', to_jsonb(j)::text FROM public.{t} j ORDER BY id").fetchall()
        return rows


@dataclass
class Api:
    client: httpx.AsyncClient
    db_url: str
    users: dict[str, User] = field(default_factory=dict)
    app: Any = None

    def user(self, name: str) -> User:
        if name not in self.users:
            self.users[name] = add_user(self.db_url, f"{name}@example.com")
        return self.users[name]


@pytest.fixture
async def api(db_url, tmp_path) -> AsyncIterator[Api]:
    app = create_app(db_url, make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, db_url, app=app)


def image_payload(**overrides) -> dict:
    """The body the guide's Step 5 sends to create an image job."""
    return {
        "workflow_name": "img2img",
        "comfy_url": "http://comfy.local:8188",
        "comfy_job_id": str(uuid.uuid4()),
        "input_image_urls": ["input/cat.png"],
        "prompt": "a cat in the style of hokusai",
        "parameters": {},
        **overrides,
    }


PAYLOADS = {
    "video": lambda **o: {"workflow_name": "lipsync-one", "comfy_url": "http://comfy.local:8188",
                          "comfy_job_id": str(uuid.uuid4()), "input_image_urls": ["face.png"],
                          "input_audio_urls": ["voice.wav"], "width": 640, "height": 360,
                          "parameters": {"trim_to_audio": True}, **o},
    "image": image_payload,
    "text": lambda **o: {"workflow_name": "character-caption", "comfy_job_id": str(uuid.uuid4()),
                         "input_image_urls": ["char.png"], "input_text": "describe", **o},
}

COMPLETIONS = {
    "video": {"status": "completed", "output_video_urls": ["/files/video/lipsync-one/v.mp4"], "comfyui_output_filename": "v.mp4",
              "width": 640, "height": 360},
    "image": {"status": "completed", "output_image_urls": ["https://cdn.example.com/out/i.png"], "comfyui_output_filename": "i.png",
              "comfyui_output_subfolder": "img2img", "width": 512, "height": 512},
    "text": {"status": "completed", "output_text": "a brave knight", "output_data": {"tags": ["knight"]}},
}


class ServerThread:
    """The app under a real uvicorn on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
