"""`HistoryStore`: the one way the pipeline reads and writes `backup_history`.

One row per backup attempt. `start` is idempotent per (dagster_run_id, target)
so a retried Dagster op reuses its row instead of adding one, and a completed
backup never turns `failed`: problems found later go to `verification_status`.
Restore drills and standby copies of a completed backup are recorded on its
row; `upsert_from_manifest` rebuilds rows from storage after the history
database was lost. The schema is migrated to head on first use, so callers
only need a URL. Migration events, retention and KPIs come from the mixins in
events.py, retention.py and kpis.py.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from backup_pipeline.core.history.base import utc as _utc
from backup_pipeline.core.history.events import MigrationEventsMixin
from backup_pipeline.core.history.kpis import KpisMixin
from backup_pipeline.core.history.models import (
    BACKUP_TYPES,
    COMPLETED,
    DEFAULT_RETENTION_DAYS,
    EXPIRED,
    FAILED,
    RUNNING,
    SOURCE_MANIFEST,
    STANDBY_FAILED,
    STANDBY_SYNCED,
    VERIFICATION_FAILED,
    VERIFICATION_PENDING,
    VERIFICATION_STATUSES,
    VERIFIED,
    backup_history,
)
from backup_pipeline.core.history.record import BackupRecord
from backup_pipeline.core.history.retention import RetentionMixin
from backup_pipeline.core.redact import redact_text

_MIB = 1024 * 1024


def _redact_json(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redact_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_json(item) for item in value]
    return value


def _json_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """detail as plain JSON (odd values such as paths become strings), every string redacted."""
    if not isinstance(detail, Mapping):
        raise TypeError(f"drill detail must be a dict, got {type(detail).__name__}")
    try:
        plain = json.loads(json.dumps(dict(detail), default=str, allow_nan=False))
    except ValueError as exc:
        raise ValueError(f"drill detail cannot be stored as JSON: {exc}") from None
    return _redact_json(plain)


def _manifest_time(manifest: Mapping[str, Any], key: str, *, required: bool) -> datetime | None:
    raw = manifest.get(key)
    if raw is None and not required:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise ValueError(f"manifest {key} {raw!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"manifest {key} {raw!r} has no UTC offset; cannot tell when the backup ran")
    return parsed.astimezone(UTC)


def _manifest_row(
    manifest: Mapping[str, Any],
    *,
    manifest_uri: str,
    archive_uri: str,
    globals_uri: str | None,
    retention_days: int,
) -> dict[str, Any]:
    """The values of a `completed` row for a backup known only from its manifest."""
    try:
        backup_id, target, backup_type = manifest["backup_id"], manifest["target"], manifest["type"]
        archive = manifest["archive"]
        size_bytes, sha256 = archive["size_bytes"], archive["sha256"]
    except KeyError as exc:
        raise ValueError(f"manifest {manifest_uri} lacks {exc}; cannot rebuild its history row") from None
    except TypeError:
        raise ValueError(f"manifest {manifest_uri} is malformed (archive is not an object)") from None
    if not isinstance(backup_id, str) or not 0 < len(backup_id) <= 36:
        raise ValueError(f"manifest {manifest_uri} has backup_id {backup_id!r}; expected a uuid string")
    if backup_type not in BACKUP_TYPES:
        raise ValueError(
            f"manifest {manifest_uri} has backup type {backup_type!r}, not one of {', '.join(BACKUP_TYPES)}"
        )
    started = _manifest_time(manifest, "started_at", required=True)
    finished = _manifest_time(manifest, "finished_at", required=False)
    duration = manifest.get("duration_seconds")
    if duration is None and finished is not None:
        duration = max((finished - started).total_seconds(), 0.0)
    compression = manifest.get("compression")
    return {
        "id": backup_id,
        "timestamp": started,
        "type": backup_type,
        "status": COMPLETED,
        "verification_status": VERIFICATION_PENDING,
        "retention_until": started + timedelta(days=retention_days),
        "target": target,
        "archive_uri": archive_uri,
        "globals_uri": globals_uri,
        "manifest_uri": manifest_uri,
        "size_bytes": size_bytes,
        "size_mb": round(size_bytes / _MIB, 2),
        "sha256": sha256,
        "row_counts": manifest.get("row_counts"),
        "duration_seconds": duration,
        "server_version": manifest.get("server_version"),
        "pg_dump_version": manifest.get("pg_dump_version"),
        "compression": compression.get("codec") if isinstance(compression, Mapping) else None,
        "dagster_run_id": manifest.get("dagster_run_id"),
        "finished_at": finished,
        "source": SOURCE_MANIFEST,
    }


class HistoryStore(MigrationEventsMixin, RetentionMixin, KpisMixin):
    """Reads and writes backup attempts in a SQLite or PostgreSQL history database."""

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

    def record_drill(
        self,
        backup_id: str,
        *,
        passed: bool,
        detail: Mapping[str, Any],
        drill_seconds: float | None,
        restored_bytes: int | None,
        drilled_at: datetime | None = None,
    ) -> BackupRecord:
        """Record a restore drill of a completed backup: `verified` if it passed, else `failed`.

        detail["reason"] becomes `verification_detail` (a one-line summary);
        the whole of detail is kept as JSON in `drill_detail`. Strings in both
        are stored redacted. A later drill replaces the earlier one's values
        and clears a drill error recorded since.
        """
        if drill_seconds is not None and drill_seconds < 0:
            raise ValueError(f"drill_seconds must be 0 or more, got {drill_seconds}")
        if restored_bytes is not None and restored_bytes < 0:
            raise ValueError(f"restored_bytes must be 0 or more, got {restored_bytes}")
        stored_detail = _json_detail(detail)
        reason = stored_detail.get("reason")
        if reason is None:
            reason = "restore drill passed" if passed else "restore drill failed"
        when = _utc(drilled_at)
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status != COMPLETED:
                raise ValueError(f"backup {backup_id} is {current.status}; only completed backups can be drilled")
            self._update(
                conn,
                backup_id,
                {
                    "verification_status": VERIFIED if passed else VERIFICATION_FAILED,
                    "verification_detail": reason if isinstance(reason, str) else json.dumps(reason),
                    "verified_at": when,
                    "drill_detail": stored_detail,
                    "drill_seconds": drill_seconds,
                    "restored_bytes": restored_bytes,
                    "drilled_at": when,
                    "drill_error": None,
                    "drill_error_at": None,
                },
            )
        return self.get(backup_id)

    def record_drill_error(self, backup_id: str, reason: str, at: datetime | None = None) -> BackupRecord:
        """Record a drill of a completed backup that could not run; its verdict stays what it was.

        A drill that could not run (storage unreachable, no disk, no server)
        is no evidence about the backup, so verification_status, drilled_at and
        drill_detail are left alone and the backup_kpis view counts no drill.
        The reason is stored redacted in `drill_error`; the next drill that
        runs clears it.
        """
        if not reason:
            raise ValueError("a drill error needs a reason")
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status != COMPLETED:
                raise ValueError(f"backup {backup_id} is {current.status}; only completed backups can be drilled")
            self._update(conn, backup_id, {"drill_error": redact_text(reason), "drill_error_at": _utc(at)})
        return self.get(backup_id)

    def record_copies(self, backup_id: str, copies: list[dict[str, Any]]) -> BackupRecord:
        """Record where a completed backup's second copies are and their state; details are stored redacted."""
        clean = [{**c, "detail": redact_text(c["detail"]) if c.get("detail") else c.get("detail")} for c in copies]
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status != COMPLETED:
                raise ValueError(f"backup {backup_id} is {current.status}; only completed backups have copies")
            self._update(conn, backup_id, {"copies": clean})
        return self.get(backup_id)

    def record_standby(
        self, backup_id: str, *, ok: bool, detail: str | None = None, synced_at: datetime | None = None
    ) -> BackupRecord:
        """Record copying a completed backup to the standby: `synced` if ok, else `failed`.

        `standby_synced_at` is when this attempt ended, whatever its outcome;
        detail is stored redacted. A later attempt replaces the earlier one.
        """
        when = _utc(synced_at)
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status != COMPLETED:
                raise ValueError(
                    f"backup {backup_id} is {current.status}; only completed backups can go to the standby"
                )
            self._update(
                conn,
                backup_id,
                {
                    "standby_status": STANDBY_SYNCED if ok else STANDBY_FAILED,
                    "standby_detail": redact_text(detail) if detail is not None else None,
                    "standby_synced_at": when,
                },
            )
        return self.get(backup_id)

    def upsert_from_manifest(
        self,
        manifest: Mapping[str, Any],
        *,
        manifest_uri: str,
        archive_uri: str,
        globals_uri: str | None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> BackupRecord:
        """Rebuild the row of a backup found in storage, for when the history database was lost.

        Returns the row with id manifest["backup_id"] unchanged if there is
        one; otherwise inserts it as `completed`, verification `pending`,
        source `manifest`, retained for retention_days from its start. If
        another row already holds its (dagster_run_id, target), the rebuilt
        row gets no dagster_run_id. Safe to repeat and to run concurrently.
        """
        if retention_days < 0:
            raise ValueError(f"retention_days must be 0 or more, got {retention_days}")
        values = _manifest_row(
            manifest,
            manifest_uri=manifest_uri,
            archive_uri=archive_uri,
            globals_uri=globals_uri,
            retention_days=retention_days,
        )
        by_id = sa.select(backup_history).where(backup_history.c.id == values["id"])
        attempts = 3
        for attempt in range(attempts):
            try:
                with self._connect() as conn:
                    existing = conn.execute(by_id).mappings().first()
                    if existing is not None:
                        return BackupRecord.from_row(existing)
                    run_id = values["dagster_run_id"]
                    if run_id is not None:
                        taken = sa.select(backup_history.c.id).where(
                            backup_history.c.dagster_run_id == run_id, backup_history.c.target == values["target"]
                        )
                        if conn.execute(taken).first() is not None:
                            values["dagster_run_id"] = None
                    # Leave absent facts SQL NULL (a None given to a JSON column would store JSON null).
                    conn.execute(sa.insert(backup_history).values({k: v for k, v in values.items() if v is not None}))
                break
            except sa.exc.IntegrityError:
                # A concurrent writer inserted this backup or took its run id; look again.
                if attempt == attempts - 1:
                    raise
        return self.get(values["id"])

    def find_by_run(self, dagster_run_id: str, target: str) -> BackupRecord | None:
        query = sa.select(backup_history).where(
            backup_history.c.dagster_run_id == dagster_run_id, backup_history.c.target == target
        )
        with self._connect() as conn:
            row = conn.execute(query).mappings().first()
        return BackupRecord.from_row(row) if row is not None else None

    def running_backups(self) -> builtins.list[BackupRecord]:
        """Every attempt still `running`, of all targets, oldest first (recovery checks each one's run)."""
        query = sa.select(backup_history).where(backup_history.c.status == RUNNING).order_by(backup_history.c.timestamp)
        return self._records(query)

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

    def latest_verified(self, target: str) -> BackupRecord | None:
        """The newest completed backup of target whose verification_status is `verified`."""
        query = (
            sa.select(backup_history)
            .where(
                backup_history.c.target == target,
                backup_history.c.status == COMPLETED,
                backup_history.c.verification_status == VERIFIED,
            )
            .order_by(backup_history.c.timestamp.desc(), backup_history.c.id.desc())
            .limit(1)
        )
        return self._first(query)

    def last_drill(self, target: str) -> BackupRecord | None:
        """The backup of target drilled most recently, whether the drill passed or failed."""
        query = (
            sa.select(backup_history)
            .where(backup_history.c.target == target, backup_history.c.drilled_at.is_not(None))
            .order_by(backup_history.c.drilled_at.desc(), backup_history.c.id.desc())
            .limit(1)
        )
        return self._first(query)
