"""A daily backup schedule per configured target (02:00 UTC unless the target says otherwise)."""

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.defs.backup.jobs import backup_job
from backup_pipeline.resources import TARGET_TAG


@dg.definitions
def backup_schedules() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(
        schedules=[
            dg.ScheduleDefinition(
                name=f"daily_backup_{target.name.replace('-', '_')}",
                cron_schedule=target.schedule,
                execution_timezone="UTC",
                job=backup_job,
                run_config={"ops": {"dump": {"config": {"target": target.name, "type": "daily"}}}},
                tags={TARGET_TAG: target.name},
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"Daily backup of {target.name}",
            )
            for target in settings.targets.values()
            if target.schedule
        ]
    )
