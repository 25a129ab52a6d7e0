"""The `backup_history` table as SQLAlchemy Core metadata, and its vocabularies.

Datetimes are stored in UTC and always come back timezone-aware, on SQLite
too: `UTCDateTime` refuses naive values, so no local wall-clock time can reach
the table. Migrations do not import this module; each revision spells out the
schema as of its own date, and this file describes the head revision.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"
STATUSES = (RUNNING, COMPLETED, FAILED, EXPIRED)

VERIFICATION_PENDING = "pending"
CHECKSUM_OK = "checksum_ok"
VERIFIED = "verified"
VERIFICATION_FAILED = "failed"
VERIFICATION_STATUSES = (VERIFICATION_PENDING, CHECKSUM_OK, VERIFIED, VERIFICATION_FAILED)

BACKUP_TYPES = ("daily", "manual", "pre-migration", "post-migration", "pre-restore")

# standby_status: NULL until the backup has been offered to the standby.
STANDBY_SYNCED = "synced"
STANDBY_FAILED = "failed"
STANDBY_STATUSES = (STANDBY_SYNCED, STANDBY_FAILED)

# source: NULL for rows the pipeline wrote as it ran the backup.
SOURCE_MANIFEST = "manifest"

DEFAULT_RETENTION_DAYS = 30
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
    sa.UniqueConstraint("dagster_run_id", "target"),
    sa.CheckConstraint(sa.column("status").in_(STATUSES), name="status"),
    sa.CheckConstraint(sa.column("verification_status").in_(VERIFICATION_STATUSES), name="verification_status"),
    sa.CheckConstraint(sa.column("type").in_(BACKUP_TYPES), name="type"),
    sa.CheckConstraint(sa.column("standby_status").in_(STANDBY_STATUSES), name="standby_status"),
    sa.Index(None, "target", "timestamp"),
)
