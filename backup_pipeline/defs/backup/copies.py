"""Second copies in the backup job: after the primary is recorded, copy, record each location, alert failures.

A failed copy never fails the backup run: the primary is complete. It is
recorded as `failed` in the history's `copies` and alerted (copy_failed).
"""

from pathlib import Path

import dagster as dg

from backup_pipeline.core.alerts import Alert, channels_from_env, known_secrets, send_alert
from backup_pipeline.core.backup import StagedBackup
from backup_pipeline.core.copies import FAILED, CopyOutcome, make_copies
from backup_pipeline.core.history import BackupRecord, HistoryStore


def run_copies(context: dg.OpExecutionContext, history: HistoryStore, staged: StagedBackup, manifest: dict,
               record: BackupRecord, storage_for, work_dir: Path) -> list[CopyOutcome]:
    if not staged.target.copies:
        return []
    outcomes = make_copies(staged.target.copies, storage_for(staged.target.storage_url), manifest,
                           staged.names.manifest, storage_for, work_dir,
                           lock_mode=staged.target.object_lock_mode, retention_until=record.retention_until)
    history.record_copies(record.id, [o.to_dict() for o in outcomes])
    failed = [o for o in outcomes if o.state == FAILED]
    for outcome in outcomes:
        (context.log.error if outcome.state == FAILED else context.log.info)(
            f"Copy of backup {record.id} to {outcome.url}: {outcome.state} ({outcome.detail})")
    channels = channels_from_env() if failed else []
    for outcome in failed if channels else []:
        alert = Alert(kind="copy_failed", target=staged.target.name, error=outcome.detail, job=context.job_name,
                      step="upload", run_id=context.run_id, backup_id=record.id)
        for delivery in send_alert(alert, channels, known_secrets([staged.target.dsn_env])):
            if not delivery.ok:
                context.log.warning(f"Could not send the copy alert to {delivery.channel}: {delivery.error}")
    return outcomes
