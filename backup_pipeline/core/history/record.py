"""`BackupRecord` and `MigrationEvent`: rows of the history as plain, immutable values.

Callers (Dagster assets, the CLI) get records, never SQLAlchemy rows, so
nothing outside this package depends on the database layer.
"""

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any


@dataclasses.dataclass(frozen=True)
class BackupRecord:
    id: str
    timestamp: datetime
    type: str
    status: str
    verification_status: str
    retention_until: datetime
    target: str
    size_mb: float | None = None
    archive_uri: str | None = None
    globals_uri: str | None = None
    manifest_uri: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    row_counts: dict[str, int] | None = None
    duration_seconds: float | None = None
    server_version: str | None = None
    pg_dump_version: str | None = None
    compression: str | None = None
    dagster_run_id: str | None = None
    error: str | None = None
    finished_at: datetime | None = None
    verified_at: datetime | None = None
    verification_detail: str | None = None
    drill_seconds: float | None = None
    restored_bytes: int | None = None
    drilled_at: datetime | None = None
    drill_detail: dict[str, Any] | None = None
    standby_status: str | None = None
    standby_synced_at: datetime | None = None
    standby_detail: str | None = None
    source: str | None = None
    expired_at: datetime | None = None
    objects_deleted_at: datetime | None = None
    retention_detail: str | None = None
    drill_error: str | None = None
    drill_error_at: datetime | None = None
    copies: list[dict[str, Any]] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "BackupRecord":
        values = {field.name: row[field.name] for field in dataclasses.fields(cls)}
        if values["size_mb"] is not None:
            values["size_mb"] = float(values["size_mb"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """All columns, datetimes as ISO-8601 strings: ready for JSON or Dagster metadata."""
        return _plain(self)


@dataclasses.dataclass(frozen=True)
class MigrationEvent:
    """A schema migration announced for a target; `seq` orders events for a sensor's cursor."""

    seq: int
    id: str
    target: str
    migration_id: str
    created_at: datetime
    status: str
    backup_id: str | None = None
    dagster_run_id: str | None = None
    error: str | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "MigrationEvent":
        return cls(**{field.name: row[field.name] for field in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """All columns, datetimes as ISO-8601 strings."""
        return _plain(self)


def _plain(record: Any) -> dict[str, Any]:
    out = dataclasses.asdict(record)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out
