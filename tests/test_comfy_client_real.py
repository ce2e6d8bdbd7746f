"""Opt-in: the ComfyClient cases against a real ComfyUI 0.13, when GENSTUDIO_TEST_COMFYUI_URL
names one (e.g. `shared/comfyui/start.sh` → http://127.0.0.1:8188). Skipped otherwise; CI
does not need it. The same cases run against the fake in test_comfy_client.py, so a
difference between the fake and the real server shows up as a failure here."""

from __future__ import annotations

import os

import pytest

from tests.comfy_client_cases import *  # noqa: F403 - the shared cases, collected against the real server
from tests.comfy_client_cases import Server

REAL_URL = os.environ.get("GENSTUDIO_TEST_COMFYUI_URL")

pytestmark = pytest.mark.skipif(not REAL_URL, reason="set GENSTUDIO_TEST_COMFYUI_URL to a real ComfyUI 0.13")


@pytest.fixture
def server() -> Server:
    return Server(REAL_URL)
