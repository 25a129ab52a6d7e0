"""Weekly restore drill, Sunday 04:00 UTC, over every configured target."""

import dagster as dg

from backup_pipeline.defs.drill.jobs import drill_job

weekly_restore_drill = dg.ScheduleDefinition(
    name="weekly_restore_drill",
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    job=drill_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Drill the newest backup in storage of every target.",
)
