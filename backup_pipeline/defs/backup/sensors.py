"""Closing out attempts whose run died without recording an outcome.

When a run worker is killed (OOM, node loss, cancel), no op is left to mark
its history row. This sensor marks any still-`running` row of a failed or
canceled run as `failed`, so history never shows a ghost in progress. It
watches every job of the code location: backups run as the `backup` job, as a
target's asset job (`backup_<target>`, its schedule) and as `__ASSET_JOB`
(Materialize), and a restore's safety backup has a row too.
"""

import dagster as dg

from backup_pipeline.core.history import RUNNING
from backup_pipeline.resources import TARGET_TAG, BackupSettings


def close_abandoned_attempt(run: dg.DagsterRun, reason: str, backup_settings: BackupSettings) -> str | None:
    target = run.tags.get(TARGET_TAG) or run.run_config.get("ops", {}).get("dump", {}).get("config", {}).get("target")
    if not target:
        return None
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    record = history.find_by_run(run.run_id, target)
    if record is None or record.status != RUNNING:
        return None
    history.fail(record.id, f"the run ended before the backup finished: {reason}")
    return record.id


def _record_failure(context: dg.RunFailureSensorContext, backup_settings: BackupSettings) -> None:
    reason = context.failure_event.message or "run failed"
    backup_id = close_abandoned_attempt(context.dagster_run, reason, backup_settings)
    if backup_id:
        context.log.info(f"Marked backup {backup_id} failed: {reason}")


backup_run_failure_recorder = dg.run_failure_sensor(
    name="backup_run_failure_recorder",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks history rows of runs that died mid-way as failed.",
)(_record_failure)
