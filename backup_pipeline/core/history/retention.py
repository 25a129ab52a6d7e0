"""Retention: how long a backup is kept, expiring it, and the log of what retention did.

The store only records; choosing what to expire (retention dates,
grandfather-father-son) and deleting objects from storage is the caller's
job, which it logs with `log_retention`. `mark_expired` does not log by
itself. An expired row stays in `backup_history` for the record; it leaves
`recent_backups` and is refused by `complete`, `fail` and `set_retention`.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from backup_pipeline.core.history.base import StoreBase, redact_optional, utc
from backup_pipeline.core.history.models import COMPLETED, EXPIRED, FAILED, KEEP_FOREVER, backup_history
from backup_pipeline.core.history.models import retention_log as retention_log_table
from backup_pipeline.core.history.record import BackupRecord

_EXPIRABLE = (COMPLETED, FAILED)
# retention_detail of a row expired before its objects are deleted; it stays until they are all gone, so a
# retention run killed half-way leaves an expired row (never a `completed` one without objects) to resume.
DELETING_OBJECTS = "expired; deleting its objects"
_MAX_ACTION = 32


class RetentionMixin(StoreBase):
    def set_retention(self, backup_id: str, until: datetime | None, detail: str | None = None) -> BackupRecord:
        """Keep the backup until then; None keeps it forever (retention_until becomes KEEP_FOREVER).

        detail says why (e.g. a tripwire pin) and replaces the previous reason, so `keep` clears a pin's.
        """
        retention_until = KEEP_FOREVER if until is None else utc(until)
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status == EXPIRED:
                raise ValueError(f"backup {backup_id} has expired; its retention can no longer change")
            self._update(conn, backup_id, {"retention_until": retention_until, "retention_detail": redact_optional(detail)})
        return self.get(backup_id)

    def mark_expired(
        self,
        backup_id: str,
        *,
        objects_deleted: bool,
        detail: str | None = None,
        expired_at: datetime | None = None,
    ) -> BackupRecord:
        """Mark a completed or failed attempt `expired`; detail is stored redacted in retention_detail.

        objects_deleted says its archive, globals and manifest are gone from
        storage (objects_deleted_at is set then). Repeating the call changes
        nothing, except that objects_deleted=True on a row expired without
        deleting its objects records the deletion (and detail, if given).
        """
        when = utc(expired_at)
        with self._connect() as conn:
            current = self._get_for_update(conn, backup_id)
            if current.status == EXPIRED:
                if not objects_deleted or current.objects_deleted_at is not None:
                    return current
                values: dict[str, Any] = {"objects_deleted_at": when}
                if detail is not None:
                    values["retention_detail"] = redact_optional(detail)
            elif current.status in _EXPIRABLE:
                values = {
                    "status": EXPIRED,
                    "expired_at": when,
                    "objects_deleted_at": when if objects_deleted else None,
                    "retention_detail": redact_optional(detail),
                }
            else:
                raise ValueError(f"backup {backup_id} is {current.status}; only completed or failed backups can expire")
            self._update(conn, backup_id, values)
        return self.get(backup_id)

    def expiry_candidates(self, now: datetime) -> builtins.list[BackupRecord]:
        """Completed and failed attempts whose retention_until is before now, oldest attempt first.

        Rows an interrupted retention run expired but did not finish deleting the objects of come too.
        """
        unfinished = sa.and_(backup_history.c.status == EXPIRED, backup_history.c.objects_deleted_at.is_(None),
                             backup_history.c.retention_detail == DELETING_OBJECTS)
        query = (
            sa.select(backup_history)
            .where(sa.or_(sa.and_(backup_history.c.status.in_(_EXPIRABLE), backup_history.c.retention_until < utc(now)),
                          unfinished))
            .order_by(backup_history.c.timestamp, backup_history.c.id)
        )
        return self._records(query)

    def completed_backups(self, target: str) -> builtins.list[BackupRecord]:
        """Every `completed` (not expired) backup of target, newest first: the input of a GFS selection."""
        query = (
            sa.select(backup_history)
            .where(backup_history.c.target == target, backup_history.c.status == COMPLETED)
            .order_by(backup_history.c.timestamp.desc(), backup_history.c.id.desc())
        )
        return self._records(query)

    def log_retention(
        self,
        *,
        target: str,
        action: str,
        backup_id: str | None = None,
        object_uri: str | None = None,
        dry_run: bool = False,
        detail: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Append one line to retention_log and return it; object_uri and detail are stored redacted."""
        if not action or len(action) > _MAX_ACTION:
            raise ValueError(f"retention action must be 1 to {_MAX_ACTION} characters, got {action!r}")
        values = {
            "at": utc(at),
            "target": target,
            "backup_id": backup_id,
            "action": action,
            "object_uri": redact_optional(object_uri),
            "dry_run": bool(dry_run),
            "detail": redact_optional(detail),
        }
        with self._connect() as conn:
            result = conn.execute(sa.insert(retention_log_table).values(values))
            return {"id": result.inserted_primary_key[0], **values}

    def retention_log(self, target: str | None = None, limit: int = 200) -> builtins.list[dict[str, Any]]:
        """Lines of retention_log newest first, optionally for one target; `at` is an aware datetime."""
        query = sa.select(retention_log_table)
        if target is not None:
            query = query.where(retention_log_table.c.target == target)
        query = query.order_by(retention_log_table.c.id.desc()).limit(limit)
        with self._connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
