"""Any PostgreSQL is checked before serving: a second cluster, started by these tests, whose
databases are SQL_ASCII and whose API roles already exist, reached by a role that is not a
superuser. `serve` and `db status` refuse each with one line naming the fix, and serve once
it is applied."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from genstudio.db.embedded import EmbeddedPostgres
from tests.conftest import searchable_tmpdir
from tests.test_embedded import clean_env, free_port, stop, wait_healthy


@pytest.fixture(scope="module")
def ascii_cluster(server_tmp) -> Iterator[EmbeddedPostgres]:
    """A second PostgreSQL cluster whose template databases are SQL_ASCII."""
    server = EmbeddedPostgres(searchable_tmpdir(server_tmp, "ascii-") / "data",
                              initdb_options=("--encoding=SQL_ASCII", "--no-locale"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def genstudio(*args: str, url: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genstudio", *args], env=clean_env(DATABASE_URL=url),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [["serve", "--port", str(free_port())], ["db", "status"]], ids=lambda c: c[0])
def test_an_sql_ascii_database_is_refused_with_the_fix(ascii_cluster, command):
    url = ascii_cluster.conninfo("genstudio")  # made from the cluster's SQL_ASCII template1
    result = genstudio(*command, url=url)
    assert result.returncode == 1, result.stderr
    problem = [line for line in result.stderr.splitlines() if line.startswith("genstudio: ")]
    assert problem[0] == (
        "genstudio: database genstudio uses encoding SQL_ASCII, but genstudio stores text as UTF8; create a UTF8 "
        "database (CREATE DATABASE genstudio_utf8 ENCODING 'UTF8' TEMPLATE template0) and point DATABASE_URL at it")
    assert len(problem) == 1
    assert "Traceback" not in result.stderr
    if command[0] == "serve":  # refused before changing anything
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('genstudio.schema_migrations')").fetchone()[0] is None


def test_a_role_that_may_not_set_the_api_roles_is_told_which_grant_is_missing(ascii_cluster):
    admin = ascii_cluster.conninfo("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        # The API roles exist already (as on a server another genstudio, or Supabase, set up),
        # and the owner of the database is an ordinary role.
        for role in ("anon", "authenticated", "service_role"):
            conn.execute(f"CREATE ROLE {role} NOLOGIN NOINHERIT")
        conn.execute("CREATE ROLE studio LOGIN")
        conn.execute("CREATE DATABASE studio OWNER studio ENCODING 'UTF8' TEMPLATE template0")
    url = make_conninfo(ascii_cluster.conninfo("studio"), user="studio")

    result = genstudio("serve", "--port", str(free_port()), url=url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "genstudio: role studio may not act as anon, authenticated, service_role, so every API request would fail "
        "with 'permission denied to set role'; as a superuser (on Supabase: postgres), run: "
        'GRANT "anon", "authenticated", "service_role" TO "studio"')
    status = genstudio("db", "status", url=url)
    assert status.returncode == 1 and "GRANT" in status.stderr and "0002  job_tables" in status.stdout

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("GRANT anon, authenticated, service_role TO studio")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "genstudio", "serve", "--port", str(port)],
                              env=clean_env(DATABASE_URL=url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_healthy(server, port)["status"] == "ok"
    code, output = stop(server, signal.SIGTERM)
    assert code == 0, output
