"""The history tables as SQLAlchemy Core metadata, and their vocabularies.

`backup_history` holds one row per backup attempt, `migration_events` the
schema migrations announced for a target (each gets a pre-migration backup),
and `retention_log` what retention expired or deleted. The view
`backup_kpis` is described by `backup_kpis_view`, kept out of `metadata` so
schema comparison sees only tables.

Datetimes are stored in UTC and always come back timezone-aware, on SQLite
too: `UTCDateTime` refuses naive values, so no local wall-clock time can reach
the table. Migrations do not import this module; each revision spells out the
schema as of its own date, and this file describes the head revision.
"""

from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..vocabulary import BACKUP_STATUSES, BACKUP_TYPES, VERIFICATION_STATUSES, BackupStatus, Verification

# The vocabularies live in core/vocabulary.py; these plain-str names are the ones the code has always imported.
RUNNING = BackupStatus.RUNNING.value
COMPLETED = BackupStatus.COMPLETED.value
FAILED = BackupStatus.FAILED.value
EXPIRED = BackupStatus.EXPIRED.value
STATUSES = BACKUP_STATUSES

VERIFICATION_PENDING = Verification.PENDING.value
CHECKSUM_OK = Verification.CHECKSUM_OK.value
VERIFIED = Verification.VERIFIED.value
VERIFICATION_FAILED = Verification.FAILED.value

# standby_status: NULL until the backup has been offered to the standby.
STANDBY_SYNCED = "synced"
STANDBY_FAILED = "failed"
STANDBY_STATUSES = (STANDBY_SYNCED, STANDBY_FAILED)

# source: NULL for rows the pipeline wrote as it ran the backup.
SOURCE_MANIFEST = "manifest"

DEFAULT_RETENTION_DAYS = 30
# retention_until of a backup kept forever: a real date, so `retention_until <
# NOW() + INTERVAL '7 days'` and other date arithmetic keep working.
KEEP_FOREVER: Final = datetime(9999, 12, 31, tzinfo=UTC)

# migration_events.status
MIGRATION_PENDING = "pending"
MIGRATION_LAUNCHED = "launched"
MIGRATION_COMPLETED = "completed"
MIGRATION_FAILED = "failed"
MIGRATION_EVENT_STATUSES = (MIGRATION_PENDING, MIGRATION_LAUNCHED, MIGRATION_COMPLETED, MIGRATION_FAILED)

# retention_log.action: the usual ones; the column accepts any short word.
RETENTION_EXPIRE = "expire"
RETENTION_DELETE_OBJECT = "delete_object"
RETENTION_ABORT_MULTIPART = "abort_multipart"
RETENTION_DELETE_ORPHAN = "delete_orphan"
RETENTION_ACTIONS = (RETENTION_EXPIRE, RETENTION_DELETE_OBJECT, RETENTION_ABORT_MULTIPART, RETENTION_DELETE_ORPHAN)
PG_SCHEMA = "public"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """`timestamptz` on PostgreSQL, UTC text on SQLite; aware datetimes both ways."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given to the backup history; pass a timezone-aware one"
            )
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

backup_history = sa.Table(
    "backup_history",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("size_mb", sa.Numeric(14, 2, asdecimal=False)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("verification_status", sa.String(16), nullable=False, server_default=VERIFICATION_PENDING),
    sa.Column("retention_until", UTCDateTime(), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("archive_uri", sa.Text()),
    sa.Column("globals_uri", sa.Text()),
    sa.Column("manifest_uri", sa.Text()),
    sa.Column("size_bytes", sa.BigInteger()),
    sa.Column("sha256", sa.String(64)),
    sa.Column("row_counts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.Column("duration_seconds", sa.Float()),
    sa.Column("server_version", sa.String(64)),
    sa.Column("pg_dump_version", sa.String(64)),
    sa.Column("compression", sa.String(32)),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("error", sa.Text()),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("verified_at", UTCDateTime()),
    sa.Column("verification_detail", sa.Text()),
    # The latest restore drill: seconds to restore is the user's real recovery time.
    sa.Column("drill_seconds", sa.Float()),
    sa.Column("restored_bytes", sa.BigInteger()),
    sa.Column("drilled_at", UTCDateTime()),
    sa.Column("drill_detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    # The latest copy to the standby; standby_synced_at is when that attempt ended.
    sa.Column("standby_status", sa.String(16)),
    sa.Column("standby_synced_at", UTCDateTime()),
    sa.Column("standby_detail", sa.Text()),
    sa.Column("source", sa.String(32)),
    # Set by retention: when the row became `expired`, when its objects left storage.
    sa.Column("expired_at", UTCDateTime()),
    sa.Column("objects_deleted_at", UTCDateTime()),
    sa.Column("retention_detail", sa.Text()),
    # The latest drill that could not run (revision 0004); cleared when a drill runs. Never a verdict.
    sa.Column("drill_error", sa.Text()),
    sa.Column("drill_error_at", UTCDateTime()),
    # Second copies (revision 0005): [{"url", "state", "manifest_uri", "detail", "attempts", "at"}, …].
    sa.Column("copies", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.UniqueConstraint("dagster_run_id", "target"),
    sa.CheckConstraint(sa.column("status").in_(STATUSES), name="status"),
    sa.CheckConstraint(sa.column("verification_status").in_(VERIFICATION_STATUSES), name="verification_status"),
    sa.CheckConstraint(sa.column("type").in_(BACKUP_TYPES), name="type"),
    sa.CheckConstraint(sa.column("standby_status").in_(STANDBY_STATUSES), name="standby_status"),
    sa.Index(None, "target", "timestamp"),
)

# seq is the primary key so that it is a true autoincrement on both backends
# (SQLite AUTOINCREMENT never reuses a value); id is the public uuid4 handle.
migration_events = sa.Table(
    "migration_events",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("migration_id", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default=MIGRATION_PENDING),
    sa.Column("backup_id", sa.String(36)),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("error", sa.Text()),
    sa.Column("updated_at", UTCDateTime()),
    sa.UniqueConstraint("id"),
    sa.UniqueConstraint("target", "migration_id"),
    sa.CheckConstraint(sa.column("status").in_(MIGRATION_EVENT_STATUSES), name="status"),
    sqlite_autoincrement=True,
)

retention_log = sa.Table(
    "retention_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("backup_id", sa.String(36)),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("object_uri", sa.Text()),
    sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("detail", sa.Text()),
    sa.Index(None, "target", "id"),
)

# The view of revision 0003, for reading it with typed results (timestamps are text on SQLite).
backup_kpis_view = sa.Table(
    "backup_kpis",
    sa.MetaData(),
    sa.Column("target", sa.String(255)),
    sa.Column("total_30d", sa.Integer()),
    sa.Column("completed_30d", sa.Integer()),
    sa.Column("success_rate_30d", sa.Float()),
    sa.Column("avg_size_mb_30d", sa.Float()),
    sa.Column("avg_duration_seconds_30d", sa.Float()),
    sa.Column("verified_share_30d", sa.Float()),
    sa.Column("last_backup_at", UTCDateTime()),
    sa.Column("last_drill_at", UTCDateTime()),
    sa.Column("last_drill_passed", sa.Boolean()),
)
