"""The restore job: one stored backup into an empty database."""

import dagster as dg

from backup_pipeline.defs.restore.ops import restore_backup


@dg.job(name="restore", description="Restore a stored backup into an empty database and check its row counts.")
def restore_job():
    restore_backup()
