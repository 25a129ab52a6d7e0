"""The row-count tripwire in the backup job: asset check `row_counts_plausible`, alert, pin.

Called by the upload step right after a backup is recorded as completed. A
tripped wire is a WARNING, not a failure: the new backup is exactly what the
database holds; what it warns about is the database. It never fails the run.
"""

import dagster as dg

from backup_pipeline.core.alerts import Alert, channels_from_env, known_secrets, send_alert
from backup_pipeline.core.config import Target
from backup_pipeline.core.history import BackupRecord, HistoryStore
from backup_pipeline.core.tripwire import TripwireResult, check_backup, evaluate
from backup_pipeline.resources import backup_asset_key

CHECK_NAME = "row_counts_plausible"


def evaluation(result: TripwireResult) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=backup_asset_key(result.target), check_name=CHECK_NAME, passed=not result.tripped,
        severity=dg.AssetCheckSeverity.WARN, metadata=_metadata(result),
    )


def check_result(target: Target, history: HistoryStore) -> dg.AssetCheckResult:
    """The check re-evaluated from history: the latest completed backup against the one before it."""
    record = history.latest(target.name)
    if record is None:
        return dg.AssetCheckResult(asset_key=backup_asset_key(target.name), check_name=CHECK_NAME,
                                   passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"reason": "no completed backup yet"})
    result = evaluate(history, record, drop_share=target.tripwire_drop_share, min_rows=target.tripwire_min_rows)
    return dg.AssetCheckResult(asset_key=backup_asset_key(target.name), check_name=CHECK_NAME,
                               passed=not result.tripped, severity=dg.AssetCheckSeverity.WARN, metadata=_metadata(result))


def _metadata(result: TripwireResult) -> dict:
    meta = result.metadata()
    return {**meta, "tables_dropped": dg.MetadataValue.json(meta["tables_dropped"])}


def run_tripwire(context: dg.OpExecutionContext, history: HistoryStore, target: Target,
                 record: BackupRecord) -> TripwireResult | None:
    """Compare, pin, report the check and alert; a failure here is logged, never fails the backup."""
    try:
        result = check_backup(history, record, drop_share=target.tripwire_drop_share,
                              min_rows=target.tripwire_min_rows, pin=target.tripwire_pin)
    except Exception as exc:  # noqa: BLE001 - the backup itself is done and recorded
        context.log.warning(f"Row-count tripwire not evaluated for backup {record.id}: {exc}")
        return None
    try:
        context.log_event(evaluation(result))
    except Exception as exc:  # noqa: BLE001 - a context outside a run (direct op invocation) takes no check events
        context.log.warning(f"Row-count check result not reported: {exc}")
    if not result.tripped:
        return result
    context.log.warning(result.summary)
    channels = channels_from_env()
    if channels:
        alert = Alert(kind="row_counts_dropped", target=target.name, error=result.summary, job=context.job_name,
                      step="upload", run_id=context.run_id, backup_id=record.id)
        for delivery in send_alert(alert, channels, known_secrets([target.dsn_env])):
            if not delivery.ok:
                context.log.warning(f"Could not send the tripwire alert to {delivery.channel}: {delivery.error}")
    return result
