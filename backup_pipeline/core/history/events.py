"""Migration events: a schema migration announced for a target, one row per (target, migration_id).

A Dagster sensor reads new events with `migration_events_after(cursor)` and
keeps the last `seq` as its cursor. That is only safe if events become
visible in `seq` order, so inserts are serialised: on PostgreSQL by a
self-exclusive table lock (readers are not blocked), on SQLite by its single
writer lock. An insert that takes seq N therefore commits before any insert
can take N+1, and a reader never sees N+1 without N. Only `seq` is assigned
at insert; updates do not move an event in that order.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from backup_pipeline.core.errors import MigrationEventNotFound
from backup_pipeline.core.history.base import StoreBase, redact_optional, utc
from backup_pipeline.core.history.models import (
    MIGRATION_COMPLETED,
    MIGRATION_EVENT_STATUSES,
    MIGRATION_PENDING,
    PG_SCHEMA,
    migration_events,
)
from backup_pipeline.core.history.record import MigrationEvent

class MigrationEventsMixin(StoreBase):
    def record_migration_event(
        self, target: str, migration_id: str, *, created_at: datetime | None = None
    ) -> MigrationEvent:
        """A `pending` event for this migration of target; the existing one, unchanged, if it was recorded before."""
        if not target or not migration_id:
            raise ValueError("a migration event needs a target and a migration_id")
        if (existing := self.find_migration_event(target, migration_id)) is not None:
            return existing
        when = utc(created_at)
        values = {
            "id": str(uuid.uuid4()),
            "target": target,
            "migration_id": migration_id,
            "created_at": when,
            "status": MIGRATION_PENDING,
            "updated_at": when,
        }
        with self._connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"LOCK TABLE {PG_SCHEMA}.migration_events IN SHARE ROW EXCLUSIVE MODE"))
                insert = postgresql.insert(migration_events)
            else:
                insert = sqlite.insert(migration_events)
            conn.execute(insert.values(values).on_conflict_do_nothing(index_elements=["target", "migration_id"]))
            row = conn.execute(self._event_query(target, migration_id)).mappings().one()
        return MigrationEvent.from_row(row)

    def migration_events_after(self, seq: int, limit: int = 100) -> builtins.list[MigrationEvent]:
        """Events with seq > seq, lowest first, at most limit of them; seq 0 starts from the beginning."""
        if limit < 1:
            raise ValueError(f"limit must be 1 or more, got {limit}")
        query = (
            sa.select(migration_events)
            .where(migration_events.c.seq > seq)
            .order_by(migration_events.c.seq)
            .limit(limit)
        )
        with self._connect() as conn:
            return [MigrationEvent.from_row(row) for row in conn.execute(query).mappings()]

    def get_migration_event(self, event_id: str) -> MigrationEvent:
        with self._connect() as conn:
            row = conn.execute(self._event_by_id(event_id)).mappings().first()
        if row is None:
            raise MigrationEventNotFound(f"no migration event with id {event_id!r} in the backup history at {self.url}")
        return MigrationEvent.from_row(row)

    def find_migration_event(self, target: str, migration_id: str) -> MigrationEvent | None:
        with self._connect() as conn:
            row = conn.execute(self._event_query(target, migration_id)).mappings().first()
        return MigrationEvent.from_row(row) if row is not None else None

    def update_migration_event(
        self,
        event_id: str,
        *,
        status: str,
        backup_id: str | None = None,
        dagster_run_id: str | None = None,
        error: str | None = None,
        updated_at: datetime | None = None,
    ) -> MigrationEvent:
        """Move an event to status; None leaves backup_id, dagster_run_id and error as they are.

        error is stored redacted, and cleared when the event becomes
        `completed`. Any status may follow any other: a re-executed Dagster
        run (which keeps its tags) may take a completed event back to
        `launched`.
        """
        if status not in MIGRATION_EVENT_STATUSES:
            raise ValueError(f"migration event status {status!r} is not one of {', '.join(MIGRATION_EVENT_STATUSES)}")
        values: dict[str, object] = {"status": status, "updated_at": utc(updated_at)}
        if backup_id is not None:
            values["backup_id"] = backup_id
        if dagster_run_id is not None:
            values["dagster_run_id"] = dagster_run_id
        if error is not None:
            values["error"] = redact_optional(error)
        if status == MIGRATION_COMPLETED:
            values["error"] = None
        with self._connect() as conn:
            result = conn.execute(sa.update(migration_events).where(migration_events.c.id == event_id).values(values))
            if result.rowcount == 0:
                raise MigrationEventNotFound(f"no migration event with id {event_id!r} in the backup history at {self.url}")
        return self.get_migration_event(event_id)

    @staticmethod
    def _event_by_id(event_id: str) -> sa.Select[tuple[object, ...]]:
        return sa.select(migration_events).where(migration_events.c.id == event_id)

    @staticmethod
    def _event_query(target: str, migration_id: str) -> sa.Select[tuple[object, ...]]:
        return sa.select(migration_events).where(
            migration_events.c.target == target, migration_events.c.migration_id == migration_id
        )
