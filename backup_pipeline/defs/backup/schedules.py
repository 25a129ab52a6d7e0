"""A daily backup schedule per configured target (02:00 UTC unless the target says otherwise).

Each launches the `backup` job for the target's partition, so its run is
tagged with the target like any other.
"""

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.defs.backup.jobs import backup_job_for
from backup_pipeline.defs.partitions import configured_targets


def schedule_name(target: str) -> str:
    return f"daily_backup_{target.replace('-', '_')}"


def daily_schedule(target: str, cron: str, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=schedule_name(target),
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily backup of {target}",
    )
    def _daily(_context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(partition_key=target, run_config={"ops": {"dump": {"config": {"type": "daily"}}}})

    return _daily


@dg.definitions
def backup_schedules() -> dg.Definitions:
    settings = load_settings()
    job = backup_job_for(configured_targets())
    return dg.Definitions(
        schedules=[daily_schedule(t.name, t.schedule, job) for t in settings.targets.values() if t.schedule]
    )
