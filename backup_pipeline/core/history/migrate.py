"""Bringing a history database to the newest Alembic revision, safely under races.

Alembic itself takes no lock, so two processes starting at once (a Dagster
run and the webserver, say) would both try to CREATE TABLE. We serialise the
upgrade: on PostgreSQL with a transaction-scoped advisory lock around
transactional DDL, on SQLite with an flock on a `<database>.lock` file beside it.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent first starts there are not serialised.
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary but fixed: every process migrating this schema must use the same key.
_PG_ADVISORY_LOCK_KEY = 0x6B75_7068_6973_74


def alembic_config(url: sa.URL | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations; no alembic.ini involved."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def sqlite_path(url: sa.URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in {"", ":memory:"} or "mode=memory" in str(url):
        return None
    return Path(database)


@contextlib.contextmanager
def _sqlite_lock(url: sa.URL) -> Iterator[None]:
    path = sqlite_path(url)
    if path is None or fcntl is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade_to_head(engine: sa.Engine) -> None:
    """Run `alembic upgrade head` on the engine's database; a no-op when already there."""
    path = sqlite_path(engine.url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(engine.url)
    with _sqlite_lock(engine.url), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_ADVISORY_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
