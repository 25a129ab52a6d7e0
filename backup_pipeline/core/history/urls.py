"""Where the backup history lives: the default URL and driver normalisation.

PostgreSQL URLs are always rewritten to the psycopg 3 driver, the only
PostgreSQL driver the project installs, so users can paste a plain
`postgresql://` or `postgres://` DSN.
"""

import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from backup_pipeline.core.errors import ConfigError
from backup_pipeline.core.redact import redact_dsn

HISTORY_URL_ENV = "BACKUP_HISTORY_URL"
HISTORY_FILENAME = "backup_history.sqlite"
_PLAIN_POSTGRES = {"postgres", "postgresql", "postgresql+psycopg"}


def default_history_url(env: Mapping[str, str] = os.environ) -> str:
    """$BACKUP_HISTORY_URL, else a SQLite file in $DAGSTER_HOME, else in ~/.backup_pipeline."""
    if env.get(HISTORY_URL_ENV):
        return env[HISTORY_URL_ENV]
    if env.get("DAGSTER_HOME"):
        folder = Path(env["DAGSTER_HOME"]).expanduser()
    else:
        folder = Path.home() / ".backup_pipeline"
    return f"sqlite:///{folder.absolute() / HISTORY_FILENAME}"


def normalize_history_url(url: str | URL) -> URL:
    """Parse a history URL, pointing any PostgreSQL URL at the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"backup history URL {redact_dsn(str(url))!r} is not a database URL; "
            "use sqlite:///path/to/file.sqlite or postgresql://user@host/dbname"
        ) from exc
    if parsed.drivername in _PLAIN_POSTGRES:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(
            f"backup history URL {redact_dsn(str(url))!r} uses {parsed.drivername!r}; "
            "only sqlite:// and postgresql:// are supported"
        )
    return parsed
