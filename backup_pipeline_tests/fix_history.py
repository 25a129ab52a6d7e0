"""Fixtures giving each test an empty, real backup-history database.

PostgreSQL tests get a database of their own, created and force-dropped per
test, so tests never see each other's rows and can run in any order: on the
machine's PostgreSQL 15 server when BACKUP_PIPELINE_TEST_PG15_DSN is set
(`.ci/run` sets it), otherwise on the embedded PostgreSQL 18 of fix_pg.
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL

PG15_DSN_ENV = "BACKUP_PIPELINE_TEST_PG15_DSN"


def pg15_dsn() -> str:
    dsn = os.environ.get(PG15_DSN_ENV)
    if not dsn:
        pytest.skip(f"set {PG15_DSN_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/postgres) to run PostgreSQL tests")
    return dsn


def _sqlalchemy_url(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    port = params.get("port")
    url = URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(port) if port else None,
        database=dbname,
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture
def sqlite_history_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'history' / 'backup_history.sqlite'}"


@pytest.fixture
def pg_history_url(request: pytest.FixtureRequest) -> Iterator[str]:
    dsn = os.environ.get(PG15_DSN_ENV) or request.getfixturevalue("pg_server").dsn()
    dbname = f"bp_history_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield _sqlalchemy_url(dsn, dbname)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: the test runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_history_url" if request.param == "sqlite" else "pg_history_url"
    return request.getfixturevalue(fixture)
