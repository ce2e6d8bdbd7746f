"""One clear line for every mistake, and no answer outside the API's JSON shape: invalid
settings, typos in variable names, unexpected server errors."""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import sys

import psycopg
import pytest

from tests.api_support import api  # noqa: F401  (fixture)
from tests.test_embedded import clean_env


def genstudio(*args: str, cwd=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genstudio", *args], env=clean_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=60)


async def test_an_unexpected_error_is_a_json_500_and_its_traceback_is_logged_once(api, caplog):
    alice = api.user("alice")
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        # A defect nobody mapped to a status: every row-level-security check now raises.
        conn.execute("CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE plpgsql "
                     "AS $$ BEGIN RAISE EXCEPTION 'a bug in the database'; END $$")
    caplog.set_level(logging.INFO)
    response = await api.client.get("/api/image-jobs", headers=alice.headers)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"success": False, "error": "internal error: the server could not handle this "
                                                          "request; it has been logged"}
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    assert "GET /api/image-jobs" in tracebacks[0].getMessage()


@pytest.mark.parametrize("env, words", [
    ({"GENSTUDIO_LOGIN_LIMIT_PER_ADDRESS": "lots"},
     "GENSTUDIO_LOGIN_LIMIT_PER_ADDRESS: 'lots' is not a rate limit such as '20/minute'"),
    ({"GENSTUDIO_LOGIN_LIMIT_PER_ACCOUNT": "5 per fortnight"}, "GENSTUDIO_LOGIN_LIMIT_PER_ACCOUNT: '5 per fortnight'"),
    ({"GENSTUDIO_POOL_MIN": "20", "GENSTUDIO_POOL_MAX": "4"}, "GENSTUDIO_POOL_MIN (20) is larger than GENSTUDIO_POOL_MAX (4)"),
    ({"GENSTUDIO_TOKEN_TTL": "0"}, "GENSTUDIO_TOKEN_TTL: Input should be greater than 0"),
    ({"GENSTUDIO_TOKEN_TTL": "-60"}, "GENSTUDIO_TOKEN_TTL: Input should be greater than 0"),
    ({"GENSTUDIO_PORT": "99999"}, "GENSTUDIO_PORT: Input should be less than or equal to 65535"),
    ({"GENSTUDIO_PORT": "0"}, "GENSTUDIO_PORT: Input should be greater than or equal to 1"),
    ({"GENSTUDIO_POOL_TIMEOUT": "0"}, "GENSTUDIO_POOL_TIMEOUT: Input should be greater than 0"),
    ({"DATABASE_URL": "mysql://root@localhost/studio"}, "DATABASE_URL: a mysql:// URL is not a PostgreSQL one"),
    ({"DATABASE_URL": "sqlite:///studio.db"}, "DATABASE_URL: a sqlite:// URL is not a PostgreSQL one"),
], ids=lambda v: "-".join(v) if isinstance(v, dict) else None)
def test_an_invalid_setting_is_one_line_before_anything_starts(db_url, env, words):
    result = genstudio("db", "status", **({"DATABASE_URL": db_url} | env))
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"genstudio: invalid setting in the environment or .env: {words}")
    assert result.stdout == ""


def test_a_data_dir_that_is_not_a_directory_is_one_line(tmp_path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    result = genstudio("db", "status", GENSTUDIO_DATA_DIR=str(a_file / "data"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"genstudio: invalid setting in the environment or .env: GENSTUDIO_DATA_DIR {a_file / 'data'} cannot be "
        f"used: {a_file} is not a directory"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_a_read_only_data_dir_is_one_line(server_tmp):
    read_only = server_tmp / "read-only"
    read_only.mkdir(mode=0o755, exist_ok=True)
    nobody = pwd.getpwnam("nobody")
    command = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
               sys.executable, "-m", "genstudio", "db", "status"]
    result = subprocess.run(command, env=clean_env(GENSTUDIO_DATA_DIR=str(read_only / "data"), HOME="/nonexistent"),
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"genstudio: invalid setting in the environment or .env: GENSTUDIO_DATA_DIR {read_only / 'data'} cannot be "
        f"used: {read_only} is not writable by this user"]


def test_unknown_genstudio_variables_are_named_with_the_closest_known_one(db_url, tmp_path):
    (tmp_path / ".env").write_text("GENSTUDIO_POOL_MAXIMUM=4\nOTHER_TOOL_SETTING=1\n")
    result = genstudio("db", "status", cwd=tmp_path, DATABASE_URL=db_url, GENSTUDIO_PROT="9000")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "genstudio: warning: unknown setting GENSTUDIO_POOL_MAXIMUM in .env is ignored; did you mean GENSTUDIO_POOL_MAX?",
        "genstudio: warning: unknown setting GENSTUDIO_PROT in the environment is ignored; did you mean GENSTUDIO_PORT?",
    ]


@pytest.mark.parametrize("page, asset_words", [("/api/docs", "swagger-ui"), ("/api/redoc", "redoc")])
async def test_api_docs_load_every_asset_from_genstudio_itself(api, page, asset_words):
    import re

    html = (await api.client.get(page)).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert any(asset_words in a for a in assets), html
    for asset in assets:
        assert asset.startswith("/api/"), f"{page} loads {asset} from elsewhere"
        response = await api.client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100


def every_command(command, path=()):
    import click

    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from every_command(sub, (*path, name))


def test_every_help_shows_whole_option_names_defaults_and_variables():
    import typer.main

    from genstudio.cli import app

    for path, command in every_command(typer.main.get_command(app)):
        result = genstudio(*path, "--help", COLUMNS="80")
        assert result.returncode == 0, (path, result.stderr)
        text = result.stdout
        assert "…" not in text, (path, text)  # rich's tables cut names and help at the terminal width
        assert " ." not in text and " ," not in text, (path, text)  # nothing swallowed before punctuation
        for param in command.params:
            for name in param.opts:
                assert name in text, (path, name, text)
            if getattr(param, "envvar", None):
                assert f"env var: {param.envvar}" in " ".join(text.split()), (path, param.name, text)
    serve_help = " ".join(genstudio("serve", "--help", COLUMNS="80").stdout.split())
    assert "[env var: GENSTUDIO_PORT; default: (8000); 1<=x<=65535]" in serve_help


def test_a_port_out_of_range_is_refused_not_replaced(db_url):
    result = genstudio("serve", "--port", "99999", DATABASE_URL=db_url)
    assert result.returncode == 2
    assert "Invalid value for '--port'" in result.stderr and "65535" in result.stderr
    assert "Uvicorn running" not in result.stderr


async def test_openapi_summaries_read_as_english(api):
    spec = (await api.client.get("/api/openapi.json")).json()
    summaries = [op["summary"] for item in spec["paths"].values() for op in item.values()]
    assert "Record an image job" in summaries and "Record a video job" in summaries
    assert not [s for s in summaries if " a image" in s or "A image" in s]
    assert " a image" not in str(spec["components"])
