"""The restore job: a stored backup into a real database, with a safety backup first."""

import dagster as dg

from backup_pipeline.defs.restore.ops import restore_backup, safety_backup


@dg.job(
    name="restore",
    description="Restore a stored backup (by id or latest verified) into a restore-destination target or a URL; "
    "a destination holding data is backed up first, protected ones need confirm.",
)
def restore_job():
    restore_backup(safety_backup())
