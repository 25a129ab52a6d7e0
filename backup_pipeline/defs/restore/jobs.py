"""The restore job: a stored backup into a real database, with a safety backup first; partition = destination target."""

from functools import cache

import dagster as dg

from backup_pipeline.defs.partitions import configured_targets, partitioned_config
from backup_pipeline.defs.restore.ops import restore_backup, safety_backup


@dg.graph(name="restore_chain")
def restore_chain():
    restore_backup(safety_backup())


@cache
def restore_job_for(targets: tuple[str, ...]) -> dg.JobDefinition:
    # Tagged with the destination target, so the queue never overlaps a restore with that target's backups.
    return restore_chain.to_job(
        name="restore",
        description="Restore a stored backup (backup_id, or latest_verified_of=<target>) into the destination target "
        "(the partition) or a URL variable; a destination holding data is backed up first, protected ones need confirm.",
        config=partitioned_config(targets, lambda _target: {"ops": {"safety_backup": {"config": {}}}}),
    )


@dg.definitions
def restore_jobs() -> dg.Definitions:
    return dg.Definitions(jobs=[restore_job_for(configured_targets())])
