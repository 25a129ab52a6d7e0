"""Drill steps: restore a stored backup into a throwaway server, then judge and record it.

The backup job and the drill job chain the same restore_drill -> verify; the
drill job's pick_backup hands them a StoredBackup like upload does.

A drill that could not run (DrillError: storage unreachable, no disk, no
server) is retried by Dagster (RetryRequested, with backoff) and, when the
retries are spent, recorded as a drill error beside the backup's unchanged
verdict: the run fails, but no check says the backup is not restorable.
"""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg

from backup_pipeline.core import catalog
from backup_pipeline.core.backup import StoredBackup, check_stored, split_backup_uri
from backup_pipeline.core.config import Target
from backup_pipeline.core.drill import DrillResult, drill_backup, manifest_uri_of
from backup_pipeline.core.errors import (
    BackupPipelineError, ConfigError, DrillError, IdentityMissing, RestoreError, VerifyError,
)
from backup_pipeline.core.encryption import NO_IDENTITY_REASON, has_identity, is_encrypted
from backup_pipeline.core.history import CHECKSUM_OK, VERIFICATION_FAILED
from backup_pipeline.defs.alerts.failed_run import DRILL_ERROR_KEY
from backup_pipeline.defs.backup.metadata import backup_event, reported_by_output
from backup_pipeline.defs.drill.report import record_drill, record_drill_error
from backup_pipeline.defs.failures import failing_as, user_message
from backup_pipeline.defs.partitions import run_target
from backup_pipeline.defs.recovery import start_run
from backup_pipeline.resources import MIGRATION_EVENT_TAG, BackupSettings


DRILL_RETRIES = 2
DRILL_RETRY_SECONDS = 30.0


class DrillRetryConfig(dg.Config):
    """How a drill that could not run is retried: drill_retries more attempts, waiting drill_retry_seconds, doubling."""

    drill_retries: int = DRILL_RETRIES
    drill_retry_seconds: float = DRILL_RETRY_SECONDS


def _drill(storage, manifest_key: str, target, stage_dir: Path, backup_id: str) -> DrillResult:
    """A result when the drill ran (passed or failed); DrillError when it could not, whatever went wrong."""
    try:
        return drill_backup(
            storage, manifest_key, stage_dir=stage_dir,
            assertion_files=[Path(p) for p in target.assertions], server_major=target.drill_pg_major,
        )
    except DrillError:
        raise
    except (VerifyError, RestoreError) as exc:  # the backup itself is bad: a verdict
        return DrillResult(backup_id=backup_id, target=target.name, manifest_uri=storage.uri(manifest_key),
                           reasons=[user_message(exc)])
    except Exception as exc:  # noqa: BLE001 - anything else is no evidence against the backup
        raise DrillError(f"the drill could not run: {user_message(exc)}") from None


def _retry(context: dg.OpExecutionContext, config: DrillRetryConfig, what: str, reason: str,
           retryable: bool = True) -> None:
    """Raise RetryRequested while retries are left, with a doubling wait; return when they are spent."""
    attempt = getattr(context, "retry_number", 0)  # directly invoked ops have none: the first attempt
    if retryable and attempt < config.drill_retries:
        wait = config.drill_retry_seconds * 2**attempt
        context.log.warning(f"Drill of {what} could not run (attempt {attempt + 1} of {config.drill_retries + 1}); "
                            f"retrying in {wait:g}s: {reason}")
        raise dg.RetryRequested(max_retries=config.drill_retries, seconds_to_wait=wait)


def _gave_up(context: dg.OpExecutionContext, config: DrillRetryConfig, history, target: str, backup_id: str,
             reason: str) -> str:
    """Record the drill error and return the run's one-line failure message."""
    verdict = record_drill_error(context, history, target, backup_id, reason)
    attempts = getattr(context, "retry_number", 0) + 1
    return (f"drill of backup {backup_id} (target {target}) could not run after {attempts} "
            f"attempt(s): {reason}; the backup itself is completed and its verdict ({verdict}) is unchanged; "
            f"the drill will be retried by the next weekly drill, or now with `backup-pipeline drill --backup-id {backup_id}`")


@dg.op(description="Download the backup from storage and restore it into a throwaway PostgreSQL; "
       "a drill that could not run is retried, then recorded as a drill error without a verdict.",
       out=dg.Out(DrillResult | None))
def restore_drill(
    context: dg.OpExecutionContext, config: DrillRetryConfig, staged: StoredBackup, backup_settings: BackupSettings
) -> Iterator[dg.Output | dg.AssetMaterialization | dg.AssetObservation]:
    # A generator: events are yielded, so the report of a drill error survives the Failure raised after it.
    # A backup run honours the target's drill switch and a missing key; the drill job drills regardless.
    if staged.new and not staged.target.drill:
        context.log.info(f"Drills are off for target {staged.target.name}; verify will check the checksum only")
        yield dg.Output(None)
        return
    if staged.new and staged.encrypted and not has_identity():
        context.log.info(f"Backup {staged.backup_id} is encrypted and {NO_IDENTITY_REASON}")
        yield dg.Output(None)
        return
    settings = backup_settings.load()
    storage = backup_settings.storage(settings, staged.target.storage_url)
    try:
        result = _drill(storage, staged.manifest_key, staged.target,
                        backup_settings.stage_dir(settings, context.run_id), staged.backup_id)
    except DrillError as exc:
        reason = user_message(exc)
        # Waiting brings no missing key; it may bring back storage, disk space or a server.
        _retry(context, config, f"backup {staged.backup_id}", reason, retryable=not isinstance(exc, IdentityMissing))
        history = backup_settings.history(settings)
        message = _gave_up(context, config, history, staged.target.name, staged.backup_id, reason)
        yield backup_event(history, staged)
        if event_id := context.get_tag(MIGRATION_EVENT_TAG):  # the migration must not wait for a verdict that never comes
            history.update_migration_event(event_id, status="failed", error=message)
        raise dg.Failure(description=message, metadata={DRILL_ERROR_KEY: reason, "backup_id": staged.backup_id},
                         allow_retries=False) from None
    yield dg.Output(result)


@dg.op(description="Judge the drill (row counts, objects, assertions) or, without a drill, the checksum; record it "
       "and report the backup with its verdict on the asset backups/<target>.", out=dg.Out(StoredBackup))
def verify(
    context: dg.OpExecutionContext, staged: StoredBackup, drill: DrillResult | None, backup_settings: BackupSettings
) -> Iterator[dg.Output | dg.AssetCheckEvaluation | dg.AssetMaterialization | dg.AssetObservation]:
    # A generator: a failed drill's check results and verdict are yielded, so they survive the Failure after them.
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    event_id = context.get_tag(MIGRATION_EVENT_TAG)
    if drill is not None:
        yield from record_drill(context, history, staged.target.name, drill)
        failure = None if drill.passed else f"backup {staged.backup_id} failed its drill: {drill.reason}"
    else:
        storage = backup_settings.storage(settings, staged.target.storage_url)
        try:
            digest, size, _ = check_stored(storage, staged.manifest_key, history.get(staged.backup_id))
            checked = f"sha256 {digest} and size {size} match the manifest"
            if staged.target.drill and staged.encrypted and not has_identity():
                checked = f"{NO_IDENTITY_REASON} ({checked})"
            history.set_verification(staged.backup_id, CHECKSUM_OK, checked)
            failure = None
        except Exception as exc:  # noqa: BLE001 - any failure to verify marks the backup unverified
            failure = user_message(exc)
            history.set_verification(staged.backup_id, VERIFICATION_FAILED, failure)
    if failure or not reported_by_output(context):  # else sync_standby's output, after this, is the materialization
        yield backup_event(history, staged)
    if event_id:
        history.update_migration_event(event_id, status="failed" if failure else "completed", error=failure)
    if failure:
        raise dg.Failure(description=failure, allow_retries=False)
    yield dg.Output(staged)


class DrillConfig(DrillRetryConfig):
    """Which backup to drill: by default the newest in storage of the run's target (its partition)."""

    target: str | None = None  # for runs without a partition
    backup_id: str | None = None


@dg.op(
    description="Pick the backup to drill: backup_id, or the newest in storage of the partition's target "
    "(found from storage alone, so drills work even if the history database was lost).",
    out=dg.Out(StoredBackup, is_required=False),
)
def pick_backup(context: dg.OpExecutionContext, config: DrillConfig, backup_settings: BackupSettings):
    with failing_as():
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        start_run(context, settings, history)
        name = run_target(context, config.target, "ops.pick_backup.config")
        if config.backup_id:
            record = history.get(config.backup_id)
            if name and record.target != name:
                raise ConfigError(f"backup {record.id} is of target {record.target!r}, not {name!r}: "
                                  f"drill it in partition {record.target!r}")
            base, key = split_backup_uri(manifest_uri_of(record))
            target = settings.targets.get(record.target) or Target(name=record.target, dsn_env="", storage_url=base)
        elif name:
            target = settings.target(name)
            base, key = target.storage_url, None
        else:
            raise ConfigError("the drill run has no target: launch it for a partition (a configured target) "
                              "or set ops.pick_backup.config.target or backup_id")
    storage = backup_settings.storage(settings, base)
    try:
        key = key or catalog.latest_manifest_key(storage, target.name)
        if key is None:
            context.log.warning(f"Target {target.name}: no backup in {base} to drill")
            return
        manifest, uris = catalog.load(storage, key)
    except BackupPipelineError as exc:
        reason = f"could not read {storage.uri(key or target.name + '/')}: {user_message(exc)}"
        _retry(context, config, f"target {target.name}", reason)
        raise dg.Failure(description=f"drill of {target.name} could not run: {reason}",
                         metadata={DRILL_ERROR_KEY: reason}, allow_retries=False) from None
    record = history.upsert_from_manifest(manifest, **uris, retention_days=target.retention_days)
    context.log.info(f"Drilling backup {record.id} of {target.name} ({storage.uri(key)})")
    yield dg.Output(StoredBackup(backup_id=record.id, target=replace(target, storage_url=base), manifest_key=key,
                                 encrypted=is_encrypted(manifest)))
