"""The backup job: dump -> upload -> verify, one target per run."""

import dagster as dg

from backup_pipeline.defs.backup.ops import dump, upload, verify


@dg.job(
    name="backup",
    description="Back up one target: consistent dump, upload with manifest last, checksum verification.",
)
def backup_job():
    verify(upload(dump()))
