"""Keeping a target's standby database one verified backup behind production.

sync_standby is the last step of the backup chain, so in the graph behind the
asset backups/<target> its output is the asset's: there it yields the backup's
report (verdict and KPIs, as verify logs it in the `backup` job) as that
output's metadata, and the asset's checks run after it. In the `backup` job
the output is optional and never yielded. A standby that cannot be refreshed
fails the step after the backup is reported, as in the `backup` job.
"""

from collections.abc import Iterator

import dagster as dg

from backup_pipeline.core.backup import StoredBackup
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.restore import restore_from_storage
from backup_pipeline.defs.backup.metadata import backup_event, backup_report, reported_by_output
from backup_pipeline.defs.failures import user_message
from backup_pipeline.resources import BackupSettings


@dg.op(description="Replace the standby database's contents with this verified backup and check its row counts.",
       out=dg.Out(dg.Nothing, is_required=False, description="the asset backups/<target>, in its own runs"))
def sync_standby(context: dg.OpExecutionContext, staged: StoredBackup,
                 backup_settings: BackupSettings) -> Iterator[dg.Output | dg.AssetMaterialization | dg.AssetObservation]:
    if not staged.target.standby_dsn_env:
        if reported_by_output(context):
            yield _report(context, backup_settings.history(backup_settings.load()), staged)
        return
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    try:
        standby = staged.target.standby_dsn()
        storage = backup_settings.storage(settings, staged.target.storage_url)
        restored = restore_from_storage(
            storage, staged.manifest_key, standby, stage_dir=backup_settings.stage_dir(settings, context.run_id),
            pg_bin_dir=staged.target.pg_bin_dir, replace=True,
        )
        restored.check_counts(PgConn.parse(standby).where)
    except Exception as exc:  # noqa: BLE001 - recorded, then the step fails
        message = user_message(exc)
        history.record_standby(staged.backup_id, ok=False, detail=message)
        if reported_by_output(context):  # the backup is good: it is reported (yielded) before the step fails
            yield backup_event(history, staged)
        raise dg.Failure(description=f"standby of {staged.target.name} not refreshed: {message}", allow_retries=False) from None
    where = PgConn.parse(standby).where
    history.record_standby(staged.backup_id, ok=True, detail=f"restored into {where}")
    context.log.info(f"Standby {where} now holds backup {staged.backup_id}")
    if reported_by_output(context):
        yield _report(context, history, staged)


def _report(context: dg.OpExecutionContext, history, staged: StoredBackup) -> dg.Output:
    """The asset's output in its own runs: the backup's report as its metadata."""
    description, metadata = backup_report(history, staged)
    context.log.info(description)
    return dg.Output(None, metadata=metadata)
