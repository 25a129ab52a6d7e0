"""Backups around schema migrations.

`pre_migration_backup_sensor` turns each recorded migration event into one
pre-migration backup run: the cursor is the last event sequence number seen
and the run key is the event id, so events recorded while the daemon was down
are picked up later and none is backed up twice.
`post_migration_backup_sensor` watches each target's migrations table and
backs up after a new version appears.
"""

import json

import dagster as dg

from backup_pipeline.core.errors import BackupPipelineError
from backup_pipeline.core.migrations import latest_migration
from backup_pipeline.defs.backup.jobs import BACKUP_JOB
from backup_pipeline.defs.failures import user_message
from backup_pipeline.defs.partitions import configured_targets
from backup_pipeline.resources import MIGRATION_EVENT_TAG, MIGRATION_ID_TAG, TARGET_TAG, BackupSettings


def backup_request(target: str, backup_type: str, run_key: str, tags: dict[str, str]) -> dg.RunRequest:
    """A backup run of the target's partition (the partition's tags add TARGET_TAG)."""
    partitioned = target in configured_targets()
    config = {"type": backup_type} if partitioned else {"target": target, "type": backup_type}
    return dg.RunRequest(
        run_key=run_key,
        run_config={"ops": {"dump": {"config": config}}},
        tags={TARGET_TAG: target, **tags},
        partition_key=target if partitioned else None,
    )


@dg.sensor(
    job_name=BACKUP_JOB,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One pre-migration backup per `backup-pipeline migration-event`.",
)
def pre_migration_backup_sensor(context: dg.SensorEvaluationContext, backup_settings: BackupSettings):
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    cursor = int(context.cursor or 0)
    events = history.migration_events_after(cursor, limit=50)
    if not events:
        return dg.SkipReason(f"no migration events after #{cursor}")
    requests = []
    for event in events:
        if event.target not in settings.targets:
            context.log.warning(f"Migration event {event.id} names unknown target {event.target!r}; skipped")
            history.update_migration_event(event.id, status="failed", error=f"unknown target {event.target!r}")
            continue
        requests.append(backup_request(
            event.target, "pre-migration", run_key=event.id,
            tags={MIGRATION_EVENT_TAG: event.id, MIGRATION_ID_TAG: event.migration_id},
        ))
    return dg.SensorResult(run_requests=requests, cursor=str(max(e.seq for e in events)))


@dg.sensor(
    job_name=BACKUP_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A post-migration backup when a target's migrations table gains a version.",
)
def post_migration_backup_sensor(context: dg.SensorEvaluationContext, backup_settings: BackupSettings):
    settings = backup_settings.load()
    seen: dict[str, str | None] = json.loads(context.cursor) if context.cursor else {}
    requests, skipped = [], []
    for target in settings.targets.values():
        if not target.migrations_table:
            continue
        try:
            version = latest_migration(target.dsn(), target.migrations_table)
        except BackupPipelineError as exc:
            skipped.append(f"{target.name}: {user_message(exc)}")
            continue
        if target.name not in seen:
            seen[target.name] = version  # first look: a baseline, not a change
        elif version is not None and version != seen[target.name]:
            seen[target.name] = version
            requests.append(backup_request(
                target.name, "post-migration", run_key=f"{target.name}:post-migration:{version}",
                tags={MIGRATION_ID_TAG: version},
            ))
    for reason in skipped:
        context.log.info(f"Not watching migrations of {reason}")
    if not requests:
        return dg.SensorResult(skip_reason="no new migration versions" + (f" ({'; '.join(skipped)})" if skipped else ""),
                               cursor=json.dumps(seen, sort_keys=True))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
