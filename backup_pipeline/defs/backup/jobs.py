"""The backup job: dump -> upload -> restore_drill -> verify -> sync_standby, one target per run."""

import dagster as dg

from backup_pipeline.defs.backup.ops import dump, upload
from backup_pipeline.defs.drill.ops import restore_drill, verify
from backup_pipeline.defs.standby.ops import sync_standby


@dg.job(
    name="backup",
    description="Back up one target: consistent dump, upload with manifest last, restore drill and verification, "
    "then refresh its standby if it has one.",
)
def backup_job():
    staged = upload(dump())
    sync_standby(verify(staged, restore_drill(staged)))
