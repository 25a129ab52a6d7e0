"""The alert sensors: every failed run of this code location, and targets without a recent backup.

Channels are read from the environment at each evaluation; with none
configured both sensors skip with a reason rather than fail. Failed
verifications and drills need no sensor of their own: their ops fail the run
with the reason, and the failed step makes the alert a `verification_failed`,
or a `drill_error` when the drill could not run (its Failure says so in metadata).
"""

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from backup_pipeline.core.alerts import Alert, Delivery, channels_from_env, due_stale_alerts, known_secrets, send_alert
from backup_pipeline.core.config import Settings
from backup_pipeline.core.freshness import BACKUP_MAX_AGE, hours
from backup_pipeline.core.history import COMPLETED
from backup_pipeline.defs.alerts.failed_run import failed_run_alert, run_dsn_envs, run_target
from backup_pipeline.resources import BackupSettings

NO_CHANNEL = ("No alert channel configured: set BACKUP_ALERT_WEBHOOK_URL, BACKUP_ALERT_SLACK_WEBHOOK_URL, "
              "DISCORD_WEBHOOK_URL or BACKUP_ALERT_SMTP_HOST (with BACKUP_ALERT_EMAIL_FROM/_TO)")


def target_dsn_envs(settings: Settings | None) -> list[str]:
    if settings is None:
        return []
    return [var for target in settings.targets.values() for var in (target.dsn_env, target.standby_dsn_env) if var]


def report(log: logging.Logger | dg.DagsterLogManager, alert: Alert, deliveries: Sequence[Delivery]) -> bool:
    """Log each delivery (errors are already redacted); True if any channel took the alert."""
    for delivery in deliveries:
        if delivery.ok:
            log.info(f"Sent {alert.kind} alert for {alert.target or 'all targets'} to {delivery.channel}")
        else:
            log.warning(f"Could not send {alert.kind} alert to {delivery.channel}: {delivery.error}")
    return any(delivery.ok for delivery in deliveries)


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    minimum_interval_seconds=10,  # Dagster's default 30 s would delay every failure alert by up to half a minute
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends every failed run (failed verifications and drills included) to the configured alert channels.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, backup_settings: BackupSettings) -> dg.SkipReason | None:
    channels = channels_from_env()
    if not channels:
        return dg.SkipReason(NO_CHANNEL)
    run = context.dagster_run
    target = run_target(run)
    settings, backup_id = None, None
    try:
        settings = backup_settings.load()
        if target:
            record = backup_settings.history(settings).find_by_run(run.run_id, target)
            backup_id = record.id if record else None
    except Exception as exc:  # noqa: BLE001 - a broken config or history must not swallow the alert
        context.log.warning(f"Alerting without backup details: {type(exc).__name__}")
    alert = failed_run_alert(run, context.failure_event, context.get_step_failure_events(), backup_id)
    deliveries = send_alert(alert, channels, known_secrets([*run_dsn_envs(run), *target_dsn_envs(settings)]))
    if not report(context.log, alert, deliveries):
        # Raising reports the error on the failed run itself and on the sensor tick.
        raise RuntimeError("no alert channel accepted the alert: " + "; ".join(f"{d.channel}: {d.error}" for d in deliveries))
    return None


@dg.sensor(
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Alerts, once per UTC day, for each target without a completed backup in the last {hours(BACKUP_MAX_AGE)} "
    "(the backups/<target> FreshnessPolicy says the same in the UI; open-source Dagster sends no alert for it).",
)
def stale_backup_sensor(context: dg.SensorEvaluationContext, backup_settings: BackupSettings) -> dg.SkipReason:
    channels = channels_from_env()
    if not channels:
        return dg.SkipReason(NO_CHANNEL)
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    last_backups = {}
    for name in settings.targets:
        record = history.latest(name, status=COMPLETED)
        last_backups[name] = (record.finished_at or record.timestamp) if record else None
    cursor = json.loads(context.cursor) if context.cursor else {}
    alerts, new_cursor = due_stale_alerts(last_backups, cursor, datetime.now(UTC))
    secrets = known_secrets(target_dsn_envs(settings))
    sent, failed = [], []
    for alert in alerts:
        if report(context.log, alert, send_alert(alert, channels, secrets)):
            sent.append(alert.target)
        else:
            failed.append(alert.target)
            new_cursor.pop(alert.target)  # not alerted today after all: try again next tick
    context.update_cursor(json.dumps(new_cursor, sort_keys=True))
    if failed:
        return dg.SkipReason(f"Stale targets {', '.join(failed)}: no channel accepted the alert; retrying next tick")
    if sent:
        return dg.SkipReason(f"Alerted for stale targets: {', '.join(sent)}")
    stale_today = sorted(set(new_cursor) & set(last_backups))
    return dg.SkipReason(f"Already alerted today for {', '.join(stale_today)}" if stale_today
                         else f"All {len(last_backups)} target(s) have a completed backup in the last {hours(BACKUP_MAX_AGE)}")
