"""Add migration_events, retention_log, retention columns and the backup_kpis view.

The three new backup_history columns are nullable and added with a plain
ALTER TABLE ADD COLUMN on both backends, so no table is recreated and the
`recent_backups` view stays as it is. `migration_events.seq` is an integer
primary key (SQLite AUTOINCREMENT, PostgreSQL serial) that sensors use as a
cursor; `id` is a unique uuid string.

`backup_kpis` has one row per target. Only its "30 days ago" differs between
the backends; on SQLite it compares strings, which works because timestamps
are stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC, the format (minus the
fraction) of datetime('now', '-30 days'). An attempt counts as completed if
its row is `completed`, or `expired` with an archive (only completed attempts
have one), so expiring backups does not lower the success rate.

Downgrading on SQLite drops columns by recreating backup_history (batch
mode), so `recent_backups` is dropped first and recreated unchanged, as 0002
does. A later revision that recreates backup_history on SQLite must lift
both views.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-15
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MIGRATION_EVENT_STATUSES = ("pending", "launched", "completed", "failed")
NEW_COLUMNS = ("expired_at", "objects_deleted_at", "retention_detail")

_CUTOFF = {
    "postgresql": "NOW() - INTERVAL '30 days'",
    "sqlite": "datetime('now', '-30 days')",
}


def _schema() -> str | None:
    return "public" if op.get_context().dialect.name == "postgresql" else None


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _create_recent_backups(prefix: str) -> None:
    # The definition of revision 0001, unchanged.
    op.execute(
        f"CREATE VIEW {prefix}recent_backups AS "
        'SELECT id, "timestamp", target, type, size_mb, status, verification_status, retention_until '
        f"FROM {prefix}backup_history WHERE status <> 'expired' "
        'ORDER BY "timestamp" DESC'
    )


def _kpis_view_sql(prefix: str, dialect: str) -> str:
    # The inner select flags each attempt once: recent (last 30 days) and done (completed, even if expired since).
    return f"""CREATE VIEW {prefix}backup_kpis AS
SELECT
    f.target AS target,
    SUM(f.recent) AS total_30d,
    SUM(f.recent_done) AS completed_30d,
    ROUND(100.0 * SUM(f.recent_done) / NULLIF(SUM(f.recent), 0), 2) AS success_rate_30d,
    ROUND(CAST(AVG(CASE WHEN f.recent_done = 1 THEN f.size_mb END) AS NUMERIC), 2) AS avg_size_mb_30d,
    ROUND(CAST(AVG(CASE WHEN f.recent_done = 1 THEN f.duration_seconds END) AS NUMERIC), 2)
        AS avg_duration_seconds_30d,
    ROUND(100.0 * SUM(CASE WHEN f.recent_done = 1 AND f.verification_status = 'verified' THEN 1 ELSE 0 END)
        / NULLIF(SUM(f.recent_done), 0), 2) AS verified_share_30d,
    MAX(CASE WHEN f.status = 'completed' THEN f."timestamp" END) AS last_backup_at,
    MAX(f.drilled_at) AS last_drill_at,
    (SELECT d.verification_status = 'verified' FROM {prefix}backup_history d
        WHERE d.target = f.target AND d.drilled_at IS NOT NULL
        ORDER BY d.drilled_at DESC, d.id DESC LIMIT 1) AS last_drill_passed
FROM (
    SELECT
        h.target, h."timestamp", h.status, h.verification_status, h.size_mb, h.duration_seconds, h.drilled_at,
        CASE WHEN h."timestamp" > {_CUTOFF[dialect]} THEN 1 ELSE 0 END AS recent,
        CASE WHEN h."timestamp" > {_CUTOFF[dialect]}
            AND (h.status = 'completed' OR (h.status = 'expired' AND h.archive_uri IS NOT NULL))
            THEN 1 ELSE 0 END AS recent_done
    FROM {prefix}backup_history h
) f
GROUP BY f.target"""


def upgrade() -> None:
    schema = _schema()
    prefix = f"{schema}." if schema else ""
    op.add_column("backup_history", sa.Column("expired_at", sa.DateTime(timezone=True)), schema=schema)
    op.add_column("backup_history", sa.Column("objects_deleted_at", sa.DateTime(timezone=True)), schema=schema)
    op.add_column("backup_history", sa.Column("retention_detail", sa.Text()), schema=schema)
    op.create_table(
        "migration_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("migration_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("backup_id", sa.String(36)),
        sa.Column("dagster_run_id", sa.String(64)),
        sa.Column("error", sa.Text()),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_migration_events")),
        sa.UniqueConstraint("id", name=op.f("uq_migration_events_id")),
        sa.UniqueConstraint("target", "migration_id", name=op.f("uq_migration_events_target_migration_id")),
        sa.CheckConstraint(_in("status", MIGRATION_EVENT_STATUSES), name=op.f("ck_migration_events_status")),
        schema=schema,
        sqlite_autoincrement=True,
    )
    op.create_table(
        "retention_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("backup_id", sa.String(36)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("object_uri", sa.Text()),
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("detail", sa.Text()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_log")),
        schema=schema,
    )
    op.create_index(op.f("ix_retention_log_target_id"), "retention_log", ["target", "id"], schema=schema)
    op.execute(_kpis_view_sql(prefix, op.get_context().dialect.name))


def downgrade() -> None:
    schema = _schema()
    prefix = f"{schema}." if schema else ""
    sqlite = op.get_context().dialect.name == "sqlite"
    op.execute(f"DROP VIEW {prefix}backup_kpis")
    op.drop_index(op.f("ix_retention_log_target_id"), table_name="retention_log", schema=schema)
    op.drop_table("retention_log", schema=schema)
    op.drop_table("migration_events", schema=schema)
    if sqlite:
        op.execute("DROP VIEW IF EXISTS recent_backups")
    with op.batch_alter_table("backup_history", schema=schema) as batch:
        for name in NEW_COLUMNS:
            batch.drop_column(name)
    if sqlite:
        _create_recent_backups(prefix)
