"""The retention job and its daily schedule (03:00 UTC, after the daily backups)."""

import dagster as dg

from backup_pipeline.defs.retention.ops import apply_retention_policy


@dg.job(name="retention", description="Expire backups past their retention and delete their objects; sweep failed uploads.")
def retention_job():
    apply_retention_policy()


daily_retention = dg.ScheduleDefinition(
    name="daily_retention",
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    job=retention_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
