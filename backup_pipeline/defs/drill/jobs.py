"""The drill job: restore the newest backup of each target into a throwaway server."""

import dagster as dg

from backup_pipeline.defs.drill.ops import drill_latest


@dg.job(name="drill", description="Prove the newest stored backup of each target restores and matches.")
def drill_job():
    drill_latest()
