"""The backup steps: dump -> upload (then the drill domain's restore_drill -> verify).

Each op reads its config, calls the core, records the outcome in
`backup_history` and logs metadata. The dump streams the archive into storage
while pg_dump runs (each part retried on its own); upload then writes the roles
file and the manifest last, retrying transient storage errors itself (Dagster's
RetryRequested) without dumping again. The sequence itself is core.backup's
start_backup -> dump_stage -> finish_backup, the same that take_backup (the
safety backup before a restore) runs; these ops add only config, retries,
metadata, logging and the tripwire/copies hooks.
"""

import shutil

import dagster as dg

from backup_pipeline.core.backup import StagedBackup, StoredBackup, dump_stage, finish_backup, start_backup
from backup_pipeline.core.config import check_backup_type
from backup_pipeline.core.errors import ConfigError, StorageError
from backup_pipeline.core.history import COMPLETED
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.storage import open_storage
from backup_pipeline.core.vocabulary import BackupTypeName
from backup_pipeline.defs.backup.copies import run_copies
from backup_pipeline.defs.backup.tripwire import run_tripwire
from backup_pipeline.defs.failures import failing_as, user_message
from backup_pipeline.defs.partitions import run_target
from backup_pipeline.defs.recovery import note_storage, start_run
from backup_pipeline.resources import MIGRATION_EVENT_TAG, BackupSettings

UPLOAD_RETRIES = 3


class BackupConfig(dg.Config):
    """What to back up. Secrets never go here: dsn_env names the variable holding the URL."""

    target: str | None = None  # the run's partition is the target; this is for unpartitioned runs (ad-hoc targets)
    type: BackupTypeName = "manual"
    storage_url: str | None = None
    dsn_env: str | None = None


@dg.op(description="Dump the target in one consistent snapshot, compressed and checksummed, into the local stage.")
def dump(context: dg.OpExecutionContext, config: BackupConfig, backup_settings: BackupSettings) -> StagedBackup:
    with failing_as():
        settings = backup_settings.load()
        name = run_target(context, config.target, "ops.dump.config")
        if not name:
            raise ConfigError("the backup run has no target: launch it for a partition (a configured target) "
                              "or set ops.dump.config.target")
        target = settings.adhoc_target(name, dsn_env=config.dsn_env, storage_url=config.storage_url)
        check_backup_type(config.type)
        history = backup_settings.history(settings)
    start_run(context, settings, history)
    note_storage(context, target.name, target.storage_url)
    record = start_backup(history, target, backup_type=config.type, dagster_run_id=context.run_id)
    if event_id := context.get_tag(MIGRATION_EVENT_TAG):
        history.update_migration_event(event_id, status="launched", backup_id=record.id, dagster_run_id=context.run_id)
    with failing_as(history, record.id, cleanup=backup_settings.stage_dir(settings, context.run_id)):
        conn = PgConn.parse(target.dsn(), what=f"database URL of target {target.name!r} ({target.dsn_env})")
        storage = backup_settings.storage(settings, target.storage_url)
        # Checks storage first; the archive streams into storage as pg_dump runs, and a streamed upload
        # that fails for good fails this op (and the backup): only roles + manifest are left to upload.
        staged = dump_stage(target, conn.dsn, storage, record, backup_type=config.type,
                            stage_dir=backup_settings.stage_dir(settings, context.run_id), log=context.log.info)
    result = staged.dump
    for warning in result.warnings:
        context.log.warning(warning)
    context.add_output_metadata(
        {
            "archive_size_bytes": result.archive_size,
            "uncompressed_bytes": result.raw_size,
            "tables": len(result.row_counts),
            "pg_dump_version": result.pg_dump_version,
            "server_version": result.server_version,
            "dump_seconds": round(result.duration_seconds, 3),
        }
    )
    return staged


@dg.op(description="Upload archive and roles file, then manifest.json last; record the backup as completed.")
def upload(context: dg.OpExecutionContext, staged: StagedBackup, backup_settings: BackupSettings) -> StoredBackup:
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    if history.get(staged.backup_id).status == COMPLETED:
        context.log.info(f"Backup {staged.backup_id} is already uploaded and recorded; nothing to do")
        return staged.stored()
    # A permanent failure (after the last retry) deletes the staged archive; a retry needs it.
    with failing_as(history, staged.backup_id, cleanup=backup_settings.stage_dir(settings, context.run_id)):
        storage = backup_settings.storage(settings, staged.target.storage_url)
        try:
            record, manifest = finish_backup(storage, history, staged, dagster_run_id=context.run_id,
                                             copies=staged.target.copies)
        except StorageError as exc:
            # Directly invoked ops (tests, notebooks) have no retry count: treat as the first attempt.
            attempt = getattr(context, "retry_number", 0)
            if exc.transient and attempt < UPLOAD_RETRIES:
                context.log.warning(f"Upload failed, will retry: {user_message(exc)}")
                raise dg.RetryRequested(max_retries=UPLOAD_RETRIES, seconds_to_wait=5 * 2**attempt) from None
            raise
    # The asset is materialized by verify, once the backup's verdict is known.
    run_tripwire(context, history, staged.target, record)
    run_copies(context, history, staged, manifest, record, lambda url: open_storage(url, settings.s3),
               backup_settings.stage_dir(settings, context.run_id) / "copies")
    shutil.rmtree(staged.dump.archive_path.parent, ignore_errors=True)
    return staged.stored()
