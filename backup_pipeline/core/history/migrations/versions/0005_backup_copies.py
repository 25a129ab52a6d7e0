"""Add `copies` to backup_history: where each second copy of a backup is, and whether it got there.

A JSON list, one entry per configured copy ({"url", "state", "manifest_uri",
"detail", "attempts", "at"}); NULL for backups of targets without copies.
Added with a plain ALTER TABLE ADD COLUMN on both backends, so no table is
recreated and neither view is touched; downgrading drops it in place (SQLite
>= 3.35), as 0004 does.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _schema() -> str | None:
    return "public" if op.get_context().dialect.name == "postgresql" else None


def upgrade() -> None:
    op.add_column("backup_history", sa.Column("copies", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
                  schema=_schema())


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("ALTER TABLE backup_history DROP COLUMN copies")
        return
    op.drop_column("backup_history", "copies", schema=_schema())
