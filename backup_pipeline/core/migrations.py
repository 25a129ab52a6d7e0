"""Watching a target's schema-migrations table for versions applied since last time.

The table (default Supabase CLI's `supabase_migrations.schema_migrations`,
whose `version` is a sortable timestamp string) is read with a short connect
timeout, so one unreachable target cannot stall a sensor tick.
"""

import psycopg
from psycopg import sql

from .errors import BackupPipelineError, ConfigError
from .pgconn import PgConn

SENSOR_CONNECT_TIMEOUT = 5


def parse_table(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    if not table:
        raise ConfigError(f"migrations_table {name!r} must be schema.table or table")
    return schema or "public", table


def latest_migration(dsn: str, table_name: str) -> str | None:
    """Newest `version` in the migrations table; None when it is empty.

    Raises ConfigError when the table does not exist (the caller logs and skips).
    """
    schema, table = parse_table(table_name)
    conn = PgConn.parse(dsn)
    with conn.connect(connect_timeout=SENSOR_CONNECT_TIMEOUT, autocommit=True) as pg:
        exists = pg.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{table}"',)).fetchone()[0]
        if not exists:
            raise ConfigError(f"{conn.where} has no table {schema}.{table}: set migrations_table, or null to stop watching")
        try:
            row = pg.execute(
                sql.SQL("SELECT max(version::text) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchone()
        except psycopg.Error as exc:
            raise BackupPipelineError(f"cannot read {schema}.{table} on {conn.where}: {str(exc).strip()}") from None
    return row[0]
