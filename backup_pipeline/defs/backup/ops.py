"""The backup steps: dump -> upload (then the drill domain's restore_drill -> verify).

Each op reads its config, calls the core, records the outcome in
`backup_history` and logs metadata. The dump streams the archive into storage
while pg_dump runs (each part retried on its own); upload then writes the roles
file and the manifest last, retrying transient storage errors itself (Dagster's
RetryRequested) without dumping again.
"""

import shutil

import dagster as dg

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import StagedBackup, StoredBackup, build_manifest, publish
from backup_pipeline.core.config import check_backup_type
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.encryption import recipients_for
from backup_pipeline.core.errors import ConfigError, StorageError
from backup_pipeline.core.history import COMPLETED
from backup_pipeline.core.object_lock import lock_for
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.storage import open_storage
from backup_pipeline.core.vocabulary import BackupTypeName
from backup_pipeline.defs.backup.copies import run_copies
from backup_pipeline.defs.backup.tripwire import run_tripwire
from backup_pipeline.core.liveness import pause_if_asked
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
    record = history.start(
        target=target.name, type=config.type, dagster_run_id=context.run_id, retention_days=target.retention_days
    )
    if event_id := context.get_tag(MIGRATION_EVENT_TAG):
        history.update_migration_event(event_id, status="launched", backup_id=record.id, dagster_run_id=context.run_id)
    with failing_as(history, record.id, cleanup=backup_settings.stage_dir(settings, context.run_id)):
        conn = PgConn.parse(target.dsn(), what=f"database URL of target {target.name!r} ({target.dsn_env})")
        storage = backup_settings.storage(settings, target.storage_url)
        storage.check()  # a missing bucket fails now, not after an hour of dumping
        names = BackupNames.for_backup(target.name, record.timestamp, target.compression, record.id)
        context.log.info(f"Dumping {conn.where} (target {target.name}, {config.type}) to {storage.uri(names.archive)}")
        result = dump_database(
            conn.dsn,
            backup_settings.stage_dir(settings, context.run_id),
            names,
            pg_bin_dir=target.pg_bin_dir,
            level=target.compression_level,
            recipients=recipients_for(target),
            # The archive streams into storage as pg_dump runs; parts retry on their own, and a streamed
            # upload that fails for good fails this op (and the backup): only roles + manifest are left to upload.
            storage=storage,
            lock=lock_for(storage, target.object_lock_mode, record.retention_until),
        )
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
    return StagedBackup(backup_id=record.id, target=target, backup_type=config.type, names=names, dump=result)


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
        manifest = build_manifest(
            backup_id=staged.backup_id,
            target=staged.target.name,
            backup_type=staged.backup_type,
            names=staged.names,
            dump=staged.dump,
            dagster_run_id=context.run_id,
            copies=staged.target.copies,
        )
        try:
            lock = lock_for(storage, staged.target.object_lock_mode, history.get(staged.backup_id).retention_until)
            published = publish(storage, staged.names, staged.dump, manifest, lock=lock)
            pause_if_asked("after-publish")
        except StorageError as exc:
            # Directly invoked ops (tests, notebooks) have no retry count: treat as the first attempt.
            attempt = getattr(context, "retry_number", 0)
            if exc.transient and attempt < UPLOAD_RETRIES:
                context.log.warning(f"Upload failed, will retry: {user_message(exc)}")
                raise dg.RetryRequested(max_retries=UPLOAD_RETRIES, seconds_to_wait=5 * 2**attempt) from None
            raise
        record = history.complete(
            staged.backup_id,
            archive_uri=published.archive_uri,
            globals_uri=published.globals_uri,
            manifest_uri=published.manifest_uri,
            size_bytes=staged.dump.archive_size,
            sha256=staged.dump.archive_sha256,
            row_counts=staged.dump.row_counts,
            duration_seconds=staged.dump.duration_seconds,
            server_version=staged.dump.server_version,
            pg_dump_version=staged.dump.pg_dump_version,
            compression=staged.dump.codec,
        )
    # The asset is materialized by verify, once the backup's verdict is known.
    run_tripwire(context, history, staged.target, record)
    run_copies(context, history, staged, manifest, record, lambda url: open_storage(url, settings.s3),
               backup_settings.stage_dir(settings, context.run_id) / "copies")
    shutil.rmtree(staged.dump.archive_path.parent, ignore_errors=True)
    return staged.stored()
