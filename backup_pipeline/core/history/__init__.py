"""The backup history: one row per backup attempt in SQLite or PostgreSQL.

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
    RUNNING,
    STATUSES,
    VERIFICATION_FAILED,
    VERIFICATION_PENDING,
    VERIFICATION_STATUSES,
    VERIFIED,
)
from backup_pipeline.core.history.record import BackupRecord
from backup_pipeline.core.history.store import HistoryStore
from backup_pipeline.core.history.urls import default_history_url, normalize_history_url

__all__ = [
    "BACKUP_TYPES",
    "CHECKSUM_OK",
    "COMPLETED",
    "DEFAULT_RETENTION_DAYS",
    "EXPIRED",
    "FAILED",
    "RUNNING",
    "STATUSES",
    "VERIFICATION_FAILED",
    "VERIFICATION_PENDING",
    "VERIFICATION_STATUSES",
    "VERIFIED",
    "BackupRecord",
    "HistoryStore",
    "default_history_url",
    "normalize_history_url",
]
