"""Keeping a backup and a restore of the same database from overlapping."""

import psycopg
from psycopg import sql

from .errors import BusyError


def lock_database(pg: psycopg.Connection, *, exclusive: bool, where: str) -> None:
    """Session advisory lock on pg's database: backups share it, a restore holds it alone.

    It works whoever launches the runs (Dagster's queue, the CLI, cron), since
    the database itself arbitrates.
    """
    fn = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
    query = sql.SQL(
        "SELECT {}(hashtext('backup_pipeline'), (SELECT oid::int FROM pg_database WHERE datname = current_database()))"
    ).format(sql.Identifier(fn))
    if not pg.execute(query).fetchone()[0]:
        raise BusyError(
            f"{where} is busy: a restore into it is running" if not exclusive
            else f"{where} is busy: a backup or restore of it is running; retry when it has finished"
        )
