"""Drill steps: restore a stored backup into a throwaway server, then judge and record it."""

from pathlib import Path

import dagster as dg

from backup_pipeline.core import catalog
from backup_pipeline.core.backup import (
    StagedBackup, check_manifest_against_record, read_manifest, split_backup_uri, verify_checksum,
)
from backup_pipeline.core.config import Target
from backup_pipeline.core.drill import DrillResult, drill_backup
from backup_pipeline.core.history import CHECKSUM_OK, VERIFICATION_FAILED
from backup_pipeline.defs.drill.report import record_drill
from backup_pipeline.defs.failures import failing_as, user_message
from backup_pipeline.resources import MIGRATION_EVENT_TAG, BackupSettings


def _drill(storage, manifest_key: str, target, stage_dir: Path, backup_id: str) -> DrillResult:
    """A drill that could not even run is a failed drill, never an exception that skips recording."""
    try:
        return drill_backup(
            storage, manifest_key, stage_dir=stage_dir,
            assertion_files=[Path(p) for p in target.assertions], server_major=target.drill_pg_major,
        )
    except Exception as exc:  # noqa: BLE001
        return DrillResult(backup_id=backup_id, target=target.name, manifest_uri=storage.uri(manifest_key),
                           reasons=[user_message(exc)])


@dg.op(description="Download the uploaded backup from storage and restore it into a throwaway PostgreSQL.")
def restore_drill(context: dg.OpExecutionContext, staged: StagedBackup, backup_settings: BackupSettings) -> DrillResult | None:
    if not staged.target.drill:
        context.log.info(f"Drills are off for target {staged.target.name}; verify will check the checksum only")
        return None
    settings = backup_settings.load()
    storage = backup_settings.storage(settings, staged.target.storage_url)
    return _drill(storage, staged.names.manifest, staged.target,
                  backup_settings.stage_dir(settings, context.run_id), staged.backup_id)


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
            history.set_verification(staged.backup_id, CHECKSUM_OK, f"sha256 {digest} and size {size} match the manifest")
            failure = None
        except Exception as exc:  # noqa: BLE001 - any failure to verify marks the backup unverified
            failure = user_message(exc)
            history.set_verification(staged.backup_id, VERIFICATION_FAILED, failure)
    if event_id:
        history.update_migration_event(event_id, status="failed" if failure else "completed", error=failure)
    if failure:
        raise dg.Failure(description=failure, allow_retries=False)
    return staged


class DrillConfig(dg.Config):
    """Which backups to drill: by default the newest in storage of every configured target."""

    target: str | None = None
    backup_id: str | None = None


@dg.op(description="Drill the newest backup in storage of each target (works even if the history database was lost).")
def drill_latest(context: dg.OpExecutionContext, config: DrillConfig, backup_settings: BackupSettings) -> list[str]:
    with failing_as():
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        if config.backup_id:
            record = history.get(config.backup_id)
            base, key = split_backup_uri(record.manifest_uri)
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
    failed, drilled = [], []
    for target, base, key in plans:
        storage = backup_settings.storage(settings, base)
        manifest, uris = catalog.load(storage, key)
        history.upsert_from_manifest(manifest, **uris)
        result = _drill(storage, key, target, backup_settings.stage_dir(settings, context.run_id), manifest["backup_id"])
        record_drill(context, history, target.name, result)
        drilled.append(result.backup_id)
        if not result.passed:
            failed.append(f"{target.name} ({result.backup_id}): {result.reason}")
    if failed:
        raise dg.Failure(description="drill failed for " + "; ".join(failed), allow_retries=False)
    return drilled
