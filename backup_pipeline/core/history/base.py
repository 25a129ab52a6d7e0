"""`StoreBase`: the engine, lazy migration and row helpers every part of `HistoryStore` shares.

`HistoryStore` is assembled from this base and one mixin per concern (backup
rows in store.py, migration events, retention, KPIs); callers only ever use
`HistoryStore`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa

from backup_pipeline.core.errors import BackupNotFound, ConnectionFailed
from backup_pipeline.core.history.migrate import upgrade_to_head
from backup_pipeline.core.history.models import PG_SCHEMA, backup_history
from backup_pipeline.core.history.record import BackupRecord
from backup_pipeline.core.history.urls import normalize_history_url
from backup_pipeline.core.redact import redact_dsn, redact_text


def utc(value: datetime | None) -> datetime:
    """value in UTC, or now if None; naive datetimes are refused."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} given to the backup history; pass a timezone-aware one"
        )
    return value.astimezone(UTC)


def redact_optional(text: str | None) -> str | None:
    return redact_text(text) if text is not None else None


def _create_engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10},
            execution_options={"schema_translate_map": {None: PG_SCHEMA}},
        )
    # A long busy timeout: the Dagster webserver and runs share one SQLite file.
    return sa.create_engine(url, connect_args={"timeout": 30})


class StoreBase:
    """A history database connection, migrated to head on first use."""

    def __init__(self, url: str | sa.URL):
        self._url = normalize_history_url(url)
        self._engine = _create_engine(self._url)
        self._ready = False
        self._ready_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The database URL with its password masked; safe to log."""
        return redact_dsn(self._url.render_as_string(hide_password=False))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to head now; otherwise it happens on first use."""
        with self._ready_lock:
            if self._ready:
                return
            try:
                upgrade_to_head(self._engine)
            except sa.exc.OperationalError as exc:
                detail = redact_text(str(exc.orig or exc).strip())
                raise ConnectionFailed(
                    f"cannot open the backup history database {self.url}: {detail}; "
                    "check BACKUP_HISTORY_URL and that the database server is reachable"
                ) from None
            self._ready = True

    def _connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        self.migrate()
        return self._engine.begin()

    def get(self, backup_id: str) -> BackupRecord:
        with self._connect() as conn:
            row = conn.execute(sa.select(backup_history).where(backup_history.c.id == backup_id)).mappings().first()
        if row is None:
            raise self._not_found(backup_id)
        return BackupRecord.from_row(row)

    def _not_found(self, backup_id: str) -> BackupNotFound:
        return BackupNotFound(
            f"no backup with id {backup_id!r} in the backup history at {self.url}: "
            "see `backup-pipeline list` for the ids"
        )

    def _first(self, query: sa.Select[Any]) -> BackupRecord | None:
        with self._connect() as conn:
            row = conn.execute(query).mappings().first()
        return BackupRecord.from_row(row) if row is not None else None

    def _records(self, query: sa.Select[Any]) -> list[BackupRecord]:
        with self._connect() as conn:
            return [BackupRecord.from_row(row) for row in conn.execute(query).mappings()]

    def _get_for_update(self, conn: sa.Connection, backup_id: str) -> BackupRecord:
        query = sa.select(backup_history).where(backup_history.c.id == backup_id).with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise self._not_found(backup_id)
        return BackupRecord.from_row(row)

    @staticmethod
    def _update(conn: sa.Connection, backup_id: str, values: Mapping[str, Any]) -> None:
        conn.execute(sa.update(backup_history).where(backup_history.c.id == backup_id).values(dict(values)))
