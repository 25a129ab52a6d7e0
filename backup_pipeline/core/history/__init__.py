"""The backup history: one row per backup attempt in SQLite or PostgreSQL.

A row also carries its latest restore drill and standby copy, and rows can be
rebuilt from the manifests in storage if the history database is lost. The
same database holds migration events (for pre-migration backups), the
retention log, and the `backup_kpis` view.

`HistoryStore(url)` is the whole interface; it migrates its database with the
packaged Alembic revisions on first use, so any empty database will do.
"""

from backup_pipeline.core.history.models import (
    BACKUP_TYPES,
    CHECKSUM_OK,
    COMPLETED,
    DEFAULT_RETENTION_DAYS,
    EXPIRED,
    FAILED,
    KEEP_FOREVER,
    MIGRATION_COMPLETED,
    MIGRATION_EVENT_STATUSES,
    MIGRATION_FAILED,
    MIGRATION_LAUNCHED,
    MIGRATION_PENDING,
    RETENTION_ABORT_MULTIPART,
    RETENTION_ACTIONS,
    RETENTION_DELETE_OBJECT,
    RETENTION_DELETE_ORPHAN,
    RETENTION_EXPIRE,
    RUNNING,
    SOURCE_MANIFEST,
    STANDBY_FAILED,
    STANDBY_STATUSES,
    STANDBY_SYNCED,
    STATUSES,
    VERIFICATION_FAILED,
    VERIFICATION_PENDING,
    VERIFICATION_STATUSES,
    VERIFIED,
)
from backup_pipeline.core.history.record import BackupRecord, MigrationEvent
from backup_pipeline.core.history.store import HistoryStore
from backup_pipeline.core.history.urls import default_history_url, normalize_history_url

__all__ = [
    "BACKUP_TYPES",
    "CHECKSUM_OK",
    "COMPLETED",
    "DEFAULT_RETENTION_DAYS",
    "EXPIRED",
    "FAILED",
    "KEEP_FOREVER",
    "MIGRATION_COMPLETED",
    "MIGRATION_EVENT_STATUSES",
    "MIGRATION_FAILED",
    "MIGRATION_LAUNCHED",
    "MIGRATION_PENDING",
    "RETENTION_ABORT_MULTIPART",
    "RETENTION_ACTIONS",
    "RETENTION_DELETE_OBJECT",
    "RETENTION_DELETE_ORPHAN",
    "RETENTION_EXPIRE",
    "RUNNING",
    "SOURCE_MANIFEST",
    "STANDBY_FAILED",
    "STANDBY_STATUSES",
    "STANDBY_SYNCED",
    "STATUSES",
    "VERIFICATION_FAILED",
    "VERIFICATION_PENDING",
    "VERIFICATION_STATUSES",
    "VERIFIED",
    "BackupRecord",
    "HistoryStore",
    "MigrationEvent",
    "default_history_url",
    "normalize_history_url",
]
