"""Restoring a stored backup into a real database, safely.

`safety_backup` resolves what to restore where, refuses a protected
destination without confirm, and backs up a destination that holds data
(type pre-restore) before anything is written. `restore_backup` then restores
(replacing the archive's objects in one transaction when the destination is
not empty) and checks the restored row counts against the manifest.
"""

import os
from dataclasses import dataclass, field

import dagster as dg

from backup_pipeline.core.backup import split_backup_uri, take_backup
from backup_pipeline.core.config import Target
from backup_pipeline.core.destination import resolve_destination
from backup_pipeline.core.errors import ConfigError, RestoreError
from backup_pipeline.core.history import COMPLETED, VERIFIED
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline.core.restore import restore_from_storage, user_relations
from backup_pipeline.defs.failures import failing_as
from backup_pipeline.defs.partitions import run_target
from backup_pipeline.defs.recovery import note_storage, start_run
from backup_pipeline.resources import BackupSettings


class RestoreConfig(dg.Config):
    """Which backup (an id, or the latest verified of a target) and where (a target or a URL variable)."""

    backup_id: str | None = None
    latest_verified_of: str | None = None
    to_target: str | None = None  # the run's partition is the destination target; this is for unpartitioned runs
    to_dsn_env: str | None = None
    confirm: str | None = None
    jobs: int = 1


@dataclass
class RestorePlan:
    backup_id: str
    manifest_uri: str
    destination_name: str
    destination_dsn_env: str | None
    to_target: str | None
    has_data: bool
    safety_backup_id: str | None
    jobs: int
    pg_bin_dir: str | None = field(default=None)


def _backup_to_restore(history, config: RestoreConfig):
    if bool(config.backup_id) == bool(config.latest_verified_of):
        raise ConfigError("choose exactly one backup: backup_id, or latest_verified_of=<target>")
    if config.latest_verified_of:
        record = history.latest_verified(config.latest_verified_of)
        if record is None:
            raise ConfigError(f"target {config.latest_verified_of!r} has no verified backup: run a drill first")
        return record
    try:
        record = history.get(config.backup_id)
    except KeyError:
        raise ConfigError(f"no backup with id {config.backup_id!r} in {history.url}: see `backup-pipeline list`") from None
    if record.status != COMPLETED or not record.manifest_uri:
        raise RestoreError(f"backup {record.id} is {record.status}, not completed: choose a completed backup")
    return record


@dg.op(description="Check the destination may be written, and back it up first if it holds data.")
def safety_backup(context: dg.OpExecutionContext, config: RestoreConfig, backup_settings: BackupSettings) -> RestorePlan:
    with failing_as():
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        start_run(context, settings, history)
        record = _backup_to_restore(history, config)
        to_target = run_target(context, config.to_target, "ops.safety_backup.config.to_target")
        destination = resolve_destination(
            settings, to_target=to_target, to_dsn_env=config.to_dsn_env, confirm=config.confirm
        )
        with PgConn.parse(destination.dsn, what="destination URL").connect() as pg:
            existing = user_relations(pg)
        safety_id = None
        if existing:
            base, _key = split_backup_uri(record.manifest_uri)
            target = destination.target or Target(name=destination.name, dsn_env="", storage_url=base)
            context.log.info(f"{destination.where} holds {len(existing)} relations: taking a pre-restore backup first")
            note_storage(context, target.name, target.storage_url)
            safety = take_backup(
                target, destination.dsn, backup_settings.storage(settings, target.storage_url), history,
                backup_type="pre-restore", stage_dir=backup_settings.stage_dir(settings, context.run_id) / "safety",
                dagster_run_id=context.run_id,
            )
            safety_id = safety.id
            context.log.info(f"Safety backup {safety.id} stored at {safety.manifest_uri}")
    if record.verification_status != VERIFIED:
        context.log.warning(f"Backup {record.id} has not passed a drill ({record.verification_status})")
    return RestorePlan(
        backup_id=record.id,
        manifest_uri=record.manifest_uri,
        destination_name=destination.name,
        destination_dsn_env=config.to_dsn_env,
        to_target=to_target,
        has_data=bool(existing),
        safety_backup_id=safety_id,
        jobs=config.jobs,
        pg_bin_dir=settings.targets[record.target].pg_bin_dir if record.target in settings.targets else None,
    )


@dg.op(description="Restore the backup into the destination and check its row counts against the manifest.")
def restore_backup(context: dg.OpExecutionContext, plan: RestorePlan, backup_settings: BackupSettings) -> dict:
    with failing_as():
        settings = backup_settings.load()
        dsn = settings.target(plan.to_target).dsn() if plan.to_target else os.environ.get(plan.destination_dsn_env or "")
        if not dsn:
            raise ConfigError(f"environment variable {plan.destination_dsn_env} (destination URL) is not set")
        destination = PgConn.parse(dsn, what="destination URL")
        base, key = split_backup_uri(plan.manifest_uri)
        context.log.info(f"Restoring backup {plan.backup_id} into {destination.where}")
        restored = restore_from_storage(
            backup_settings.storage(settings, base), key, dsn,
            stage_dir=backup_settings.stage_dir(settings, context.run_id), pg_bin_dir=plan.pg_bin_dir,
            jobs=plan.jobs, replace=plan.has_data,
        )
        restored.check_counts(destination.where)
    for warning in restored.result.warnings:
        context.log.warning(warning)
    context.add_output_metadata({
        "destination": destination.where,
        "safety_backup_id": plan.safety_backup_id or "none (destination was empty)",
        "roles_created": ", ".join(restored.result.roles_created) or "none",
        "restore_seconds": round(restored.result.duration_seconds, 3),
        "total_rows": sum(restored.row_counts.values()),
    })
    return {
        "backup_id": plan.backup_id,
        "destination": destination.where,
        "safety_backup_id": plan.safety_backup_id,
        "roles_created": restored.result.roles_created,
        "restore_seconds": restored.result.duration_seconds,
        "row_counts": restored.row_counts,
        "expected_row_counts": restored.manifest.get("row_counts", {}),
        "warnings": restored.result.warnings,
    }
