"""The backup job: dump -> upload -> restore_drill -> verify -> sync_standby, one target (partition) per run."""

from functools import cache

import dagster as dg

from backup_pipeline.defs.backup.ops import dump, upload
from backup_pipeline.defs.drill.ops import restore_drill, verify
from backup_pipeline.defs.partitions import configured_targets, partitioned_config
from backup_pipeline.defs.standby.ops import sync_standby

BACKUP_JOB = "backup"


@dg.graph(name="backup_chain")
def backup_chain():
    staged = upload(dump())
    sync_standby(verify(staged, restore_drill(staged)))


@cache
def backup_job_for(targets: tuple[str, ...]) -> dg.JobDefinition:
    """The job, partitioned by the configured targets (unpartitioned, config `target` required, with none)."""
    return backup_chain.to_job(
        name=BACKUP_JOB,
        description="Back up one target (the partition): consistent dump, upload with manifest last, restore drill "
        "and verification, then refresh its standby if it has one.",
        config=partitioned_config(targets, lambda _target: {"ops": {"dump": {"config": {"type": "manual"}}}}),
    )


@dg.definitions
def backup_jobs() -> dg.Definitions:
    return dg.Definitions(jobs=[backup_job_for(configured_targets())])
