"""Add restore-drill, standby-sync and rebuilt-from-manifest columns to backup_history.

All new columns are nullable, so existing rows stay valid as they are. The
`standby_status` vocabulary gets a CHECK constraint; SQLite can only add one
by recreating the table (Alembic batch mode), and renaming the copy into
place fails while `recent_backups` points at the old table, so on SQLite the
view is dropped first and recreated unchanged afterwards. PostgreSQL alters
the table in place and leaves the view (and any grants on it) alone.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-08
"""

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STANDBY_STATUSES = ("synced", "failed")
NEW_COLUMNS = (
    "drill_seconds",
    "restored_bytes",
    "drilled_at",
    "drill_detail",
    "standby_status",
    "standby_synced_at",
    "standby_detail",
    "source",
)


def _schema() -> str | None:
    return "public" if op.get_context().dialect.name == "postgresql" else None


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _create_view(prefix: str) -> None:
    # The definition of revision 0001, unchanged.
    op.execute(
        f"CREATE VIEW {prefix}recent_backups AS "
        'SELECT id, "timestamp", target, type, size_mb, status, verification_status, retention_until '
        f"FROM {prefix}backup_history WHERE status <> 'expired' "
        'ORDER BY "timestamp" DESC'
    )


class _ViewLifted:
    """Drops `recent_backups` around a SQLite table recreate; a no-op on PostgreSQL."""

    def __init__(self, schema: str | None):
        self.schema = schema
        self.prefix = f"{schema}." if schema else ""
        self.sqlite = op.get_context().dialect.name == "sqlite"

    def __enter__(self) -> None:
        if self.sqlite:
            op.execute(f"DROP VIEW IF EXISTS {self.prefix}recent_backups")

    def __exit__(self, *exc: object) -> None:
        if self.sqlite and exc[0] is None:
            _create_view(self.prefix)


def _new_columns() -> Iterator[sa.Column]:
    yield sa.Column("drill_seconds", sa.Float())
    yield sa.Column("restored_bytes", sa.BigInteger())
    yield sa.Column("drilled_at", sa.DateTime(timezone=True))
    yield sa.Column("drill_detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"))
    yield sa.Column("standby_status", sa.String(16))
    yield sa.Column("standby_synced_at", sa.DateTime(timezone=True))
    yield sa.Column("standby_detail", sa.Text())
    yield sa.Column("source", sa.String(32))


def upgrade() -> None:
    schema = _schema()
    with _ViewLifted(schema), op.batch_alter_table("backup_history", schema=schema) as batch:
        for column in _new_columns():
            batch.add_column(column)
        batch.create_check_constraint(
            op.f("ck_backup_history_standby_status"), _in("standby_status", STANDBY_STATUSES)
        )


def downgrade() -> None:
    schema = _schema()
    with _ViewLifted(schema), op.batch_alter_table("backup_history", schema=schema) as batch:
        batch.drop_constraint(op.f("ck_backup_history_standby_status"), type_="check")
        for name in NEW_COLUMNS:
            batch.drop_column(name)
