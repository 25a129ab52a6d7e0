"""Keeping a target's standby database one verified backup behind production.

sync_standby is the last step of the backup chain, so in the graph behind the
asset backups/<target> its output is the asset's: an optional Nothing output it
never yields, because verify already reported the asset (with its verdict and
KPIs) and Dagster must not log a second, empty materialization.
"""

from collections.abc import Iterator

import dagster as dg

from backup_pipeline.core.backup import StoredBackup
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.restore import restore_from_storage
from backup_pipeline.defs.failures import user_message
from backup_pipeline.resources import BackupSettings


@dg.op(description="Replace the standby database's contents with this verified backup and check its row counts.",
       out=dg.Out(dg.Nothing, is_required=False, description="never yielded: verify reports the asset"))
def sync_standby(context: dg.OpExecutionContext, staged: StoredBackup, backup_settings: BackupSettings) -> Iterator[None]:
    yield from ()  # a generator op: returning would yield the output, and a second materialization of the asset
    if not staged.target.standby_dsn_env:
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
        raise dg.Failure(description=f"standby of {staged.target.name} not refreshed: {message}", allow_retries=False) from None
    where = PgConn.parse(standby).where
    history.record_standby(staged.backup_id, ok=True, detail=f"restored into {where}")
    context.log.info(f"Standby {where} now holds backup {staged.backup_id}")
