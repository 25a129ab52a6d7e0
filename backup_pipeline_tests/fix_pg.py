"""Real PostgreSQL servers for tests.

The embedded wheel's PostgreSQL 18 (and 16) run as throwaway servers on
127.0.0.1; the machine's PostgreSQL 15 (BACKUP_PIPELINE_TEST_PG15_DSN) plays a
production server of another major. Each test gets its own database.
"""

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline_tests.fix_history import pg15_dsn

SOURCE_PASSWORD = "Sup3r-S3cret-pw!"


def sample_sql() -> str:
    return files("backup_pipeline.demo").joinpath("sample.sql").read_text()


def new_database(admin_dsn: str, prefix: str = "bp_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EphemeralPostgres]:
    """PostgreSQL 18 with password authentication: the usual source server."""
    with EphemeralPostgres(18, password=SOURCE_PASSWORD) as server:
        yield server


@pytest.fixture
def source_dsn(pg_server: EphemeralPostgres) -> str:
    """A fresh database on pg_server loaded with the sample shop schema."""
    dsn = new_database(pg_server.dsn())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sample_sql())
    return dsn


@pytest.fixture
def empty_source_dsn(pg_server: EphemeralPostgres) -> str:
    return new_database(pg_server.dsn())


@pytest.fixture
def restore_server() -> Iterator[EphemeralPostgres]:
    """A brand-new PostgreSQL 18 that has none of the source's roles."""
    with EphemeralPostgres(18) as server:
        yield server


@pytest.fixture
def pg15_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL 15 server."""
    admin = pg15_dsn()
    dsn = new_database(admin, "bp_pg15")
    try:
        yield dsn
    finally:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            try:  # roles are cluster-wide: leave the shared server as we found it
                conn.execute("DROP ROLE IF EXISTS shop_app, shop_readonly")
            except psycopg.Error:
                pass


@pytest.fixture
def drill_tmp(monkeypatch) -> Iterator[Path]:
    """A temp folder of this test's own for drill servers, so servers of tests running alongside do not count."""
    path = Path(tempfile.mkdtemp(prefix="drill-tmp-", dir="/tmp"))
    path.chmod(0o755)  # the servers run as nobody
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)
