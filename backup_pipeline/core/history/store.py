"""`HistoryStore`: the one way the pipeline reads and writes `backup_history`.

One row per backup attempt. `start` is idempotent per (dagster_run_id, target)
so a retried Dagster op reuses its row instead of adding one, and a completed
backup never turns `failed`: problems found later go to `verification_status`.
The schema is migrated to head on first use, so callers only need a URL.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from backup_pipeline.core.errors import ConnectionFailed
from backup_pipeline.core.history.migrate import upgrade_to_head
from backup_pipeline.core.history.models import (
    BACKUP_TYPES,
    COMPLETED,
    DEFAULT_RETENTION_DAYS,
    EXPIRED,
    FAILED,
    PG_SCHEMA,
    RUNNING,
    VERIFICATION_STATUSES,
    backup_history,
)
from backup_pipeline.core.history.record import BackupRecord
from backup_pipeline.core.history.urls import normalize_history_url
from backup_pipeline.core.redact import redact_dsn, redact_text

_MIB = 1024 * 1024


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} given to the backup history; pass a timezone-aware one"
        )
    return value.astimezone(UTC)


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


class HistoryStore:
    """Reads and writes backup attempts in a SQLite or PostgreSQL history database."""

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
        return f"HistoryStore({self.url!r})"

    def __enter__(self) -> HistoryStore:
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

    def start(
        self,
        *,
        target: str,
        type: str,
        dagster_run_id: str | None = None,
        started_at: datetime | None = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> BackupRecord:
        """Record a `running` attempt; returns the existing row unchanged if this run already has one."""
        if type not in BACKUP_TYPES:
            raise ValueError(f"backup type {type!r} is not one of {', '.join(BACKUP_TYPES)}")
        if retention_days < 0:
            raise ValueError(f"retention_days must be 0 or more, got {retention_days}")
        if dagster_run_id is not None and (existing := self.find_by_run(dagster_run_id, target)):
            return existing
        started = _utc(started_at)
        values = {
            "id": str(uuid.uuid4()),
            "timestamp": started,
            "type": type,
            "status": RUNNING,
            "verification_status": "pending",
            "retention_until": started + timedelta(days=retention_days),
            "target": target,
            "dagster_run_id": dagster_run_id,
        }
        try:
            with self._connect() as conn:
                conn.execute(sa.insert(backup_history).values(values))
        except sa.exc.IntegrityError:
            # Another process started the same run between our lookup and insert.
            if dagster_run_id is not None and (existing := self.find_by_run(dagster_run_id, target)):
                return existing
            raise
        return self.get(values["id"])

    def complete(
        self,
        backup_id: str,
        *,
        archive_uri: str,
        globals_uri: str | None,
        manifest_uri: str | None,
        size_bytes: int,
        sha256: str,
        row_counts: Mapping[str, int] | None,
        duration_seconds: float,
        server_version: str | None,
        pg_dump_version: str | None,
        compression: str | None,
        finished_at: datetime | None = None,
    ) -> BackupRecord:
        """Mark the attempt `completed` with its archive facts; repeating the same call changes nothing."""
        values: dict[str, Any] = {
            "status": COMPLETED,
            "archive_uri": archive_uri,
            "globals_uri": globals_uri,
            "manifest_uri": manifest_uri,
            "size_bytes": size_bytes,
            "size_mb": round(size_bytes / _MIB, 2),
            "sha256": sha256,
            "row_counts": dict(row_counts) if row_counts is not None else None,
            "duration_seconds": duration_seconds,
            "server_version": server_version,
            "pg_dump_version": pg_dump_version,
            "compression": compression,
            "error": None,
        }
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status == EXPIRED:
                raise ValueError(f"backup {backup_id} has expired and cannot be marked completed")
            if current.status == COMPLETED and (current.sha256, current.archive_uri) == (sha256, archive_uri):
                return current
            values["finished_at"] = _utc(finished_at)
            self._update(conn, backup_id, values)
        return self.get(backup_id)

    def fail(
        self,
        backup_id: str,
        error: str,
        *,
        finished_at: datetime | None = None,
        duration_seconds: float | None = None,
    ) -> BackupRecord:
        """Mark a running (or already failed) attempt `failed`; the error text is stored redacted."""
        finished = _utc(finished_at)
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status in (COMPLETED, EXPIRED):
                raise ValueError(
                    f"backup {backup_id} is {current.status} and cannot become failed; "
                    "record a later problem with set_verification(..., 'failed', detail) instead"
                )
            if duration_seconds is None:
                duration_seconds = max((finished - current.timestamp).total_seconds(), 0.0)
            self._update(
                conn,
                backup_id,
                {
                    "status": FAILED,
                    "error": redact_text(error),
                    "finished_at": finished,
                    "duration_seconds": duration_seconds,
                },
            )
        return self.get(backup_id)

    def set_verification(
        self,
        backup_id: str,
        status: str,
        detail: str | None = None,
        verified_at: datetime | None = None,
    ) -> BackupRecord:
        """Record the outcome of checking a completed backup (checksum, test restore)."""
        if status not in VERIFICATION_STATUSES:
            raise ValueError(f"verification status {status!r} is not one of {', '.join(VERIFICATION_STATUSES)}")
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status != COMPLETED:
                raise ValueError(f"backup {backup_id} is {current.status}; only completed backups can be verified")
            self._update(
                conn,
                backup_id,
                {
                    "verification_status": status,
                    "verification_detail": redact_text(detail) if detail is not None else None,
                    "verified_at": None if status == "pending" else _utc(verified_at),
                },
            )
        return self.get(backup_id)

    def get(self, backup_id: str) -> BackupRecord:
        with self._connect() as conn:
            row = conn.execute(sa.select(backup_history).where(backup_history.c.id == backup_id)).mappings().first()
        if row is None:
            raise KeyError(f"no backup with id {backup_id!r} in the backup history at {self.url}")
        return BackupRecord.from_row(row)

    def find_by_run(self, dagster_run_id: str, target: str) -> BackupRecord | None:
        query = sa.select(backup_history).where(
            backup_history.c.dagster_run_id == dagster_run_id, backup_history.c.target == target
        )
        with self._connect() as conn:
            row = conn.execute(query).mappings().first()
        return BackupRecord.from_row(row) if row is not None else None

    def list(
        self, target: str | None = None, limit: int = 50, status: str | None = None
    ) -> builtins.list[BackupRecord]:
        """Attempts newest first, optionally for one target and/or one status."""
        query = sa.select(backup_history)
        if target is not None:
            query = query.where(backup_history.c.target == target)
        if status is not None:
            query = query.where(backup_history.c.status == status)
        query = query.order_by(backup_history.c.timestamp.desc(), backup_history.c.id.desc()).limit(limit)
        with self._connect() as conn:
            return [BackupRecord.from_row(row) for row in conn.execute(query).mappings()]

    def latest(self, target: str, status: str | None = COMPLETED) -> BackupRecord | None:
        """The newest attempt for target with that status (any status if None)."""
        found = self.list(target=target, limit=1, status=status)
        return found[0] if found else None

    def _get_for_update(self, conn: sa.Connection, backup_id: str) -> BackupRecord:
        query = sa.select(backup_history).where(backup_history.c.id == backup_id).with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise KeyError(f"no backup with id {backup_id!r} in the backup history at {self.url}")
        return BackupRecord.from_row(row)

    @staticmethod
    def _update(conn: sa.Connection, backup_id: str, values: Mapping[str, Any]) -> None:
        conn.execute(sa.update(backup_history).where(backup_history.c.id == backup_id).values(dict(values)))
