"""The restore step: a stored backup into an empty database, rows counted after."""

import os

import dagster as dg

from backup_pipeline.core.backup import split_backup_uri
from backup_pipeline.core.errors import ConfigError, RestoreError
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.restore import restore_from_storage
from backup_pipeline.defs.failures import failing_as
from backup_pipeline.resources import BackupSettings


class RestoreConfig(dg.Config):
    """Which backup, and the variable holding the destination URL (never the URL itself)."""

    backup_id: str
    to_dsn_env: str
    jobs: int = 1


@dg.op(description="Download a backup, check its sha256, create missing roles, pg_restore, count rows.")
def restore_backup(context: dg.OpExecutionContext, config: RestoreConfig, backup_settings: BackupSettings) -> dict:
    with failing_as():
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        try:
            record = history.get(config.backup_id)
        except KeyError:
            raise ConfigError(f"no backup with id {config.backup_id!r} in {history.url}: see `backup-pipeline list`") from None
        if record.status != "completed" or not record.manifest_uri:
            raise RestoreError(f"backup {record.id} is {record.status}, not completed: choose a completed backup")
        to_dsn = os.environ.get(config.to_dsn_env)
        if not to_dsn:
            raise ConfigError(f"environment variable {config.to_dsn_env} (destination URL) is not set")
        destination = PgConn.parse(to_dsn, what="destination URL")
        base, key = split_backup_uri(record.manifest_uri)
        storage = backup_settings.storage(settings, base)
        context.log.info(f"Restoring backup {record.id} ({record.target}) into {destination.where}")
        restored = restore_from_storage(
            storage, key, to_dsn, stage_dir=backup_settings.stage_dir(settings, context.run_id),
            pg_bin_dir=settings.targets[record.target].pg_bin_dir if record.target in settings.targets else None,
            jobs=config.jobs,
        )
        if restored.mismatches:
            raise RestoreError(
                f"restored row counts differ from the manifest in {destination.where}: "
                + ", ".join(f"{t}: expected {e}, got {a}" for t, (e, a) in list(restored.mismatches.items())[:10])
            )
    for warning in restored.result.warnings:
        context.log.warning(warning)
    context.add_output_metadata(
        {
            "destination": destination.where,
            "roles_created": ", ".join(restored.result.roles_created) or "none",
            "restore_seconds": round(restored.result.duration_seconds, 3),
            "tables": len(restored.row_counts),
            "total_rows": sum(restored.row_counts.values()),
        }
    )
    return {
        "backup_id": record.id,
        "destination": destination.where,
        "roles_created": restored.result.roles_created,
        "restore_seconds": restored.result.duration_seconds,
        "row_counts": restored.row_counts,
        "expected_row_counts": restored.manifest.get("row_counts", {}),
        "warnings": restored.result.warnings,
    }
