"""Fixtures shared by the whole suite: a real PostgreSQL and fresh databases on it.

The cluster is an embedded PostgreSQL started once per session in a temporary directory, or
the server named by GENSTUDIO_TEST_DATABASE_URL (a conninfo with rights to create databases).
Each test gets its own database: a copy of a template that already has every migration
applied, which takes milliseconds, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from genstudio.db.embedded import EmbeddedPostgres
from genstudio.db.migrator import Migrator


@dataclass
class Cluster:
    admin_conninfo: str

    def conninfo(self, database: str) -> str:
        return make_conninfo(self.admin_conninfo, dbname=database)

    def create_database(self, template: str | None = None) -> str:
        name = f"gs_test_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where tests keep embedded PostgreSQL data directories.

    As root the embedded server runs as a service account, which must be able to search every
    directory above its data. pytest's own temporary directories are private to root (0700)
    and genstudio rightly refuses to widen them, so as root the tests use a directory they make
    themselves, searchable by others.
    """
    base = tmp_path_factory.getbasetemp()
    if os.geteuid() != 0 or all(p.stat().st_mode & stat.S_IXOTH for p in [base, *base.parents]):
        yield base
        return
    own = Path(tempfile.mkdtemp(prefix="genstudio-tests-"))
    own.chmod(0o711)
    try:
        yield own
    finally:
        shutil.rmtree(own, ignore_errors=True)


def searchable_tmpdir(parent: Path, prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    directory.chmod(0o711)
    return directory


@pytest.fixture
def data_dir(server_tmp: Path) -> Path:
    """A new, not yet existing GENSTUDIO_DATA_DIR the embedded server may use (even as root)."""
    return searchable_tmpdir(server_tmp, "case-") / "data"


@pytest.fixture(scope="session")
def pg_cluster(server_tmp: Path) -> Iterator[Cluster]:
    external = os.environ.get("GENSTUDIO_TEST_DATABASE_URL")
    if external:
        yield Cluster(external)
        return
    server = EmbeddedPostgres(searchable_tmpdir(server_tmp, "pg-") / "data")
    server.start()
    try:
        yield Cluster(server.conninfo("postgres"))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_template(pg_cluster: Cluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    Migrator(pg_cluster.conninfo(name)).upgrade()
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture
def empty_db(pg_cluster: Cluster) -> Iterator[str]:
    """Conninfo of a new, empty database."""
    name = pg_cluster.create_database()
    yield pg_cluster.conninfo(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def db_url(pg_cluster: Cluster, migrated_template: str) -> Iterator[str]:
    """Conninfo of a new database with the whole genstudio schema applied."""
    name = pg_cluster.create_database(template=migrated_template)
    yield pg_cluster.conninfo(name)
    pg_cluster.drop_database(name)


# The fake ComfyUI's fixtures (`fake_comfy`, `fake_comfy_factory`), for every test module.
from tests.fakes.comfyui import fake_comfy, fake_comfy_factory  # noqa: E402, F401
