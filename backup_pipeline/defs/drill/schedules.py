"""Weekly restore drill, Sunday 04:00 UTC: one drill run per configured target (its partition)."""

import dagster as dg

from backup_pipeline.defs.drill.jobs import drill_job_for
from backup_pipeline.defs.partitions import configured_targets


@dg.definitions
def drill_schedules() -> dg.Definitions:
    targets = configured_targets()

    @dg.schedule(
        name="weekly_restore_drill",
        cron_schedule="0 4 * * 0",
        execution_timezone="UTC",
        job=drill_job_for(targets),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Drill the newest backup in storage of every target, one run per target.",
    )
    def weekly_restore_drill(context: dg.ScheduleEvaluationContext):
        if not targets:
            return dg.SkipReason("no targets configured (backup_targets.yaml or DATABASE_URL)")
        tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M") if context.scheduled_execution_time else "now"
        return [dg.RunRequest(run_key=f"{name}:{tick}", partition_key=name) for name in targets]

    return dg.Definitions(schedules=[weekly_restore_drill])
