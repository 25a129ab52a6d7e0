"""Add drill_error and drill_error_at to backup_history: drills that could not run.

A drill that could not run (storage unreachable, no disk for the stage, the
throwaway server would not start) says nothing about the backup, so it is
recorded beside the verdict, never in `verification_status`. Both columns
are nullable and added with a plain ALTER TABLE ADD COLUMN on both backends,
so no table is recreated and neither view (`recent_backups`, `backup_kpis`)
is touched. Downgrading drops them with ALTER TABLE DROP COLUMN, which SQLite
has done in place since 3.35 as long as no view or index names the column;
none does, so the views stay too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEW_COLUMNS = ("drill_error", "drill_error_at")


def _schema() -> str | None:
    return "public" if op.get_context().dialect.name == "postgresql" else None


def upgrade() -> None:
    schema = _schema()
    op.add_column("backup_history", sa.Column("drill_error", sa.Text()), schema=schema)
    op.add_column("backup_history", sa.Column("drill_error_at", sa.DateTime(timezone=True)), schema=schema)


def downgrade() -> None:
    schema = _schema()
    if op.get_context().dialect.name == "sqlite":
        for name in NEW_COLUMNS:
            # Alembic's SQLite drop_column would recreate the table, which fails while the views point at it.
            op.execute(f"ALTER TABLE backup_history DROP COLUMN {name}")
        return
    for name in NEW_COLUMNS:
        op.drop_column("backup_history", name, schema=schema)
