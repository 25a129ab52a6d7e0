"""The drill job: pick_backup -> restore_drill -> verify, the backup job's drill steps, one target (partition) per run."""

from functools import cache

import dagster as dg

from backup_pipeline.defs.drill.ops import pick_backup, restore_drill, verify
from backup_pipeline.defs.partitions import configured_targets, partitioned_config

DRILL_JOB = "drill"


@dg.graph(name="drill_chain")
def drill_chain():
    picked = pick_backup()
    verify(picked, restore_drill(picked))


@cache
def drill_job_for(targets: tuple[str, ...]) -> dg.JobDefinition:
    """Partitioned by the configured targets; without any, config names the target or backup_id."""
    return drill_chain.to_job(
        name=DRILL_JOB,
        description="Prove the newest stored backup of the target (the partition), or backup_id, restores and matches.",
        config=partitioned_config(targets, lambda _target: {}),
    )


@dg.definitions
def drill_jobs() -> dg.Definitions:
    return dg.Definitions(jobs=[drill_job_for(configured_targets())])
