"""Local accounts end to end: `genstudio user add | list | passwd | delete` with a minimum
password length, and a re-post of one's own comfy_job_id with other values is a 409 that names
them (an identical re-post stays a no-op)."""

from __future__ import annotations

import subprocess
import sys

import httpx

from genstudio.api.app import create_app
from tests.api_support import ServerThread, api, image_payload, make_settings  # noqa: F401
from tests.test_embedded import clean_env


def user(db_url: str, *args: str, password: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genstudio", "user", *args], input=password and f"{password}\n",
                          env=clean_env(DATABASE_URL=db_url, **env), capture_output=True, text=True, timeout=60)


def login(base_url: str, email: str, password: str) -> int:
    return httpx.post(f"{base_url}/api/auth/login", json={"email": email, "password": password}, timeout=10).status_code


def test_accounts_are_listed_repassworded_and_deleted(db_url, tmp_path):
    short = user(db_url, "add", "dana@example.com", password="eleven-char")
    assert short.returncode == 1
    assert short.stderr.strip().splitlines() == [
        "genstudio: the password must be at least 12 characters long (GENSTUDIO_MIN_PASSWORD_LENGTH)"]
    assert user(db_url, "add", "dana@example.com", password="short", GENSTUDIO_MIN_PASSWORD_LENGTH="4").returncode == 0
    assert user(db_url, "add", "erin@example.com", password="a long first password").returncode == 0

    listed = user(db_url, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["dana@example.com", "erin@example.com"]
    assert all("jobs=0" in line and "last-sign-in=never" in line for line in lines)

    with ServerThread(create_app(db_url, make_settings(tmp_path))) as server:
        assert login(server.base_url, "erin@example.com", "a long first password") == 200
        assert user(db_url, "passwd", "erin@example.com", password="too short").returncode == 1
        changed = user(db_url, "passwd", "erin@example.com", password="a long second password")
        assert changed.returncode == 0 and changed.stdout.strip() == "password changed for erin@example.com"
        assert login(server.base_url, "erin@example.com", "a long first password") == 401
        assert login(server.base_url, "erin@example.com", "a long second password") == 200
        assert "last-sign-in=never" not in user(db_url, "list").stdout.splitlines()[1]

    missing = user(db_url, "passwd", "nobody@example.com", password="whatever it is, long")
    assert missing.returncode == 1 and missing.stderr.strip() == "genstudio: no account for nobody@example.com"
    deleted = user(db_url, "delete", "dana@example.com")
    assert deleted.returncode == 0 and deleted.stdout.startswith("deleted dana@example.com (")
    assert [line.split()[0] for line in user(db_url, "list").stdout.strip().splitlines()] == ["erin@example.com"]
    assert user(db_url, "delete", "dana@example.com").returncode == 1


async def test_deleting_an_account_that_owns_jobs_needs_with_jobs(api):
    alice = api.user("alice")
    assert (await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)).status_code == 201
    refused = user(api.db_url, "delete", alice.email)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("genstudio: alice@example.com owns 1 jobs, which would be deleted with the "
                                      "account; pass --with-jobs to delete both")
    assert (await api.client.get("/api/image-jobs", headers=alice.headers)).json()["total_count"] == 1
    deleted = user(api.db_url, "delete", alice.email, "--with-jobs")
    assert deleted.returncode == 0 and deleted.stdout.strip().endswith("and its 1 jobs")


async def test_reposting_your_comfy_job_id_with_other_values_is_a_409_naming_them(api):
    alice = api.user("alice")
    payload = image_payload(parameters={"steps": 20})
    first = await api.client.post("/api/image-jobs", json=payload, headers=alice.headers)
    assert first.status_code == 201
    same = await api.client.post("/api/image-jobs", json=payload, headers=alice.headers)
    assert same.status_code == 200 and same.json()["image_job"]["id"] == first.json()["image_job"]["id"]

    changed = payload | {"prompt": "a dog instead", "parameters": {"steps": 30}}
    conflict = await api.client.post("/api/image-jobs", json=changed, headers=alice.headers)
    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert "other values for parameters, prompt" in error and payload["comfy_job_id"] in error
    stored = (await api.client.get(f"/api/image-jobs/{first.json()['image_job']['id']}", headers=alice.headers)).json()
    assert stored["image_job"]["prompt"] == payload["prompt"]  # nothing was overwritten
