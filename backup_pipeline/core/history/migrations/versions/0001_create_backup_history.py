"""Create table backup_history and view recent_backups.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("running", "completed", "failed", "expired")
VERIFICATION_STATUSES = ("pending", "checksum_ok", "verified", "failed")
BACKUP_TYPES = ("daily", "manual", "pre-migration", "post-migration", "pre-restore")


def _schema() -> str | None:
    return "public" if op.get_context().dialect.name == "postgresql" else None


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    schema = _schema()
    prefix = f"{schema}." if schema else ""
    op.create_table(
        "backup_history",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("size_mb", sa.Numeric(14, 2)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verification_status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("retention_until", sa.DateTime(timezone=True), nullable=False),
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
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.Column("verification_detail", sa.Text()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_history")),
        sa.UniqueConstraint("dagster_run_id", "target", name=op.f("uq_backup_history_dagster_run_id_target")),
        sa.CheckConstraint(_in("status", STATUSES), name=op.f("ck_backup_history_status")),
        sa.CheckConstraint(
            _in("verification_status", VERIFICATION_STATUSES), name=op.f("ck_backup_history_verification_status")
        ),
        sa.CheckConstraint(_in("type", BACKUP_TYPES), name=op.f("ck_backup_history_type")),
        schema=schema,
    )
    op.create_index(
        op.f("ix_backup_history_target_timestamp"), "backup_history", ["target", "timestamp"], schema=schema
    )
    op.execute(
        f"CREATE VIEW {prefix}recent_backups AS "
        'SELECT id, "timestamp", target, type, size_mb, status, verification_status, retention_until '
        f"FROM {prefix}backup_history WHERE status <> 'expired' "
        'ORDER BY "timestamp" DESC'
    )


def downgrade() -> None:
    schema = _schema()
    prefix = f"{schema}." if schema else ""
    op.execute(f"DROP VIEW {prefix}recent_backups")
    op.drop_index(op.f("ix_backup_history_target_timestamp"), table_name="backup_history", schema=schema)
    op.drop_table("backup_history", schema=schema)
