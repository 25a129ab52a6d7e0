"""Drill steps: restore a stored backup into a throwaway server, then judge and record it.

A drill that could not run (DrillError: storage unreachable, no disk, no
server) is retried by Dagster (RetryRequested, with backoff) and, when the
retries are spent, recorded as a drill error beside the backup's unchanged
verdict: the run fails, but no check says the backup is not restorable.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from backup_pipeline.core import catalog
from backup_pipeline.core.backup import (
    StagedBackup, check_manifest_against_record, read_manifest, split_backup_uri, verify_checksum,
)
from backup_pipeline.core.config import Target
from backup_pipeline.core.drill import DrillResult, drill_backup, manifest_uri_of
from backup_pipeline.core.errors import BackupPipelineError, DrillError, IdentityMissing, RestoreError, VerifyError
from backup_pipeline.core.encryption import NO_IDENTITY_REASON, has_identity
from backup_pipeline.core.history import CHECKSUM_OK, VERIFICATION_FAILED
from backup_pipeline.defs.alerts.failed_run import DRILL_ERROR_KEY
from backup_pipeline.defs.drill.report import record_drill, record_drill_error
from backup_pipeline.defs.failures import failing_as, user_message
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


@dg.op(description="Download the uploaded backup from storage and restore it into a throwaway PostgreSQL; "
       "a drill that could not run is retried, then recorded as a drill error without a verdict.")
def restore_drill(
    context: dg.OpExecutionContext, config: DrillRetryConfig, staged: StagedBackup, backup_settings: BackupSettings
) -> DrillResult | None:
    if not staged.target.drill:
        context.log.info(f"Drills are off for target {staged.target.name}; verify will check the checksum only")
        return None
    if staged.dump.recipients and not has_identity():
        context.log.info(f"Backup {staged.backup_id} is encrypted and {NO_IDENTITY_REASON}")
        return None
    settings = backup_settings.load()
    storage = backup_settings.storage(settings, staged.target.storage_url)
    try:
        return _drill(storage, staged.names.manifest, staged.target,
                      backup_settings.stage_dir(settings, context.run_id), staged.backup_id)
    except DrillError as exc:
        reason = user_message(exc)
        # Waiting brings no missing key; it may bring back storage, disk space or a server.
        _retry(context, config, f"backup {staged.backup_id}", reason, retryable=not isinstance(exc, IdentityMissing))
        history = backup_settings.history(settings)
        message = _gave_up(context, config, history, staged.target.name, staged.backup_id, reason)
        if event_id := context.get_tag(MIGRATION_EVENT_TAG):  # the migration must not wait for a verdict that never comes
            history.update_migration_event(event_id, status="failed", error=message)
        raise dg.Failure(description=message, metadata={DRILL_ERROR_KEY: reason, "backup_id": staged.backup_id},
                         allow_retries=False) from None


@dg.op(description="Judge the drill (row counts, objects, assertions) or, without a drill, the checksum; record it.")
def verify(
    context: dg.OpExecutionContext, staged: StagedBackup, drill: DrillResult | None, backup_settings: BackupSettings
) -> StagedBackup:
    settings = backup_settings.load()
    history = backup_settings.history(settings)
    event_id = context.get_tag(MIGRATION_EVENT_TAG)
    if drill is not None:
        record_drill(context, history, staged.target.name, drill)
        failure = None if drill.passed else f"backup {staged.backup_id} failed its drill: {drill.reason}"
    else:
        storage = backup_settings.storage(settings, staged.target.storage_url)
        try:
            manifest = read_manifest(storage, staged.names.manifest)
            check_manifest_against_record(manifest, history.get(staged.backup_id), storage.uri(staged.names.manifest))
            digest, size = verify_checksum(storage, manifest)
            checked = f"sha256 {digest} and size {size} match the manifest"
            if staged.target.drill and staged.dump.recipients and not has_identity():
                checked = f"{NO_IDENTITY_REASON} ({checked})"
            history.set_verification(staged.backup_id, CHECKSUM_OK, checked)
            failure = None
        except Exception as exc:  # noqa: BLE001 - any failure to verify marks the backup unverified
            failure = user_message(exc)
            history.set_verification(staged.backup_id, VERIFICATION_FAILED, failure)
    if event_id:
        history.update_migration_event(event_id, status="failed" if failure else "completed", error=failure)
    if failure:
        raise dg.Failure(description=failure, allow_retries=False)
    return staged


class DrillConfig(DrillRetryConfig):
    """Which backups to drill: by default the newest in storage of every configured target."""

    target: str | None = None
    backup_id: str | None = None


@dg.op(description="Drill the newest backup in storage of each target (works even if the history database was lost).")
def drill_latest(context: dg.OpExecutionContext, config: DrillConfig, backup_settings: BackupSettings) -> list[str]:
    with failing_as():
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        start_run(context, settings, history)
        if config.backup_id:
            record = history.get(config.backup_id)
            base, key = split_backup_uri(manifest_uri_of(record))
            target = settings.targets.get(record.target) or Target(name=record.target, dsn_env="", storage_url=base)
            plans = [(target, base, key)]
        else:
            names = [config.target] if config.target else sorted(settings.targets)
            plans = []
            for name in names:
                target = settings.target(name)
                key = catalog.latest_manifest_key(backup_settings.storage(settings, target.storage_url), name)
                if key is None:
                    context.log.warning(f"Target {name}: no backup in {target.storage_url} to drill")
                    continue
                plans.append((target, target.storage_url, key))
    failed, drilled, errors = [], [], []
    earlier = _drilled_since(context) if getattr(context, "retry_number", 0) else None
    for target, base, key in plans:
        storage = backup_settings.storage(settings, base)
        try:
            manifest, uris = catalog.load(storage, key)
        except BackupPipelineError as exc:
            errors.append((target.name, None, f"could not read {storage.uri(key)}: {user_message(exc)}", True))
            continue
        record = history.upsert_from_manifest(manifest, **uris)
        if earlier and record.drilled_at and record.drilled_at >= earlier:
            # A retry after another target's drill error: this one was drilled by an earlier attempt.
            drilled.append(record.id)
            if record.verification_status == VERIFICATION_FAILED:
                failed.append(f"{target.name} ({record.id}): {record.verification_detail}")
            continue
        try:
            result = _drill(storage, key, target, backup_settings.stage_dir(settings, context.run_id), record.id)
        except DrillError as exc:
            errors.append((target.name, record.id, user_message(exc), not isinstance(exc, IdentityMissing)))
            continue
        record_drill(context, history, target.name, result)
        drilled.append(result.backup_id)
        if not result.passed:
            failed.append(f"{target.name} ({result.backup_id}): {result.reason}")
    if errors:
        _retry(context, config, ", ".join(f"{t} ({b or 'unknown backup'})" for t, b, _, _ in errors),
               "; ".join(r for _, _, r, _ in errors), retryable=any(again for *_, again in errors))
        failed += [_gave_up(context, config, history, t, b, r) if b else f"drill of {t} could not run: {r}"
                   for t, b, r, _ in errors]
    if failed:
        # Only drill errors: say so, so the alert is a drill_error and not a failed verification.
        metadata = {DRILL_ERROR_KEY: "; ".join(r for _, _, r, _ in errors)} if len(errors) == len(failed) else {}
        prefix = "" if metadata else "drill failed for "
        raise dg.Failure(description=prefix + "; ".join(failed), metadata=metadata, allow_retries=False)
    return drilled


def _drilled_since(context: dg.OpExecutionContext) -> datetime | None:
    """When this run started: a drill recorded after it was done by an earlier attempt of this step."""
    stats = context.instance.get_run_stats(context.run_id)
    return datetime.fromtimestamp(stats.start_time, UTC) if stats and stats.start_time else None
