"""A daily backup schedule per configured target (02:00 UTC unless the target says otherwise).

Each runs the target's asset job `backup_<target>` (defs/backup/assets.py), so
the schedule is the asset's automation in the UI and its run is tagged with
the target like any other.
"""

import dagster as dg

from backup_pipeline.core.config import Target, load_settings
from backup_pipeline.defs.backup.assets import asset_job_name, asset_run_config, schedule_name


def daily_schedule(target: Target) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=schedule_name(target.name),
        cron_schedule=target.schedule,
        execution_timezone="UTC",
        job_name=asset_job_name(target.name),  # defined beside the asset
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily backup of {target.name}",
    )
    def _daily(_context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_config=asset_run_config(target.name, "daily"))

    return _daily


@dg.definitions
def backup_schedules() -> dg.Definitions:
    return dg.Definitions(schedules=[daily_schedule(t) for t in load_settings().targets.values() if t.schedule])
