"""The CLI's and the demo's runs of the jobs: first-class Dagster runs on the shared instance.

Each run is created with the code location's origin (backup_pipeline/runs.py): a daemon alive on the
instance queues it (one run per target) and runs it, otherwise it runs in this process; either way the UI
shows it and the alert sensors see it. Secrets given on the command line are put in this process's
environment under a fixed variable name and only that name enters run config, so such runs stay here.
"""

import os
import time
from dataclasses import dataclass

from backup_pipeline.core.errors import ConfigError
from backup_pipeline.core.history import BackupRecord, HistoryStore, default_history_url
from backup_pipeline.dagster_home import ensure_dagster_home
from backup_pipeline.defs.partitions import configured_targets, run_tags
from backup_pipeline.resources import MIGRATION_EVENT_TAG

__all__ = ["JobOutcome", "ensure_dagster_home", "history", "run_backup", "run_restore", "run_retention", "run_drill"]

CLI_DSN_ENV = "BACKUP_PIPELINE_CLI_DSN"
CLI_RESTORE_DSN_ENV = "BACKUP_PIPELINE_CLI_RESTORE_DSN"
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class JobOutcome:
    success: bool
    run_id: str
    error: str | None
    output: object = None


def history() -> HistoryStore:
    ensure_dagster_home()
    return HistoryStore(default_history_url())


def _execute(job_name: str, run_config: dict, tags: dict[str, str], verbose: bool, *, here: bool = False,
             output: str | None = None) -> JobOutcome:
    from backup_pipeline.runs import launch

    ensure_dagster_home()
    run = launch(job_name, run_config, tags, here=here, in_process_config=None if verbose else _QUIET,
                 outputs=(output,) if output else ())
    return JobOutcome(run.success, run.run_id, run.error, run.outputs.get(output) if output else None)


def run_backup(
    target: str,
    *,
    backup_type: str = "manual",
    dsn: str | None = None,
    storage_url: str | None = None,
    dsn_env: str | None = None,
    verbose: bool = False,
) -> tuple[JobOutcome, BackupRecord | None]:
    if dsn:
        os.environ[CLI_DSN_ENV] = dsn
        dsn_env = CLI_DSN_ENV
    op_config = {"target": target, "type": backup_type, "storage_url": storage_url, "dsn_env": dsn_env}
    # A DSN variable named by the caller lives in this process's environment, not the daemon's.
    outcome = _execute("backup", {"ops": {"dump": {"config": op_config}}}, run_tags(target), verbose,
                       here=dsn_env is not None)
    record = history().find_by_run(outcome.run_id, target)
    if not outcome.success and record and record.status == "completed":
        record = history().get(record.id)  # verification was recorded after the first read
    elif not outcome.success and record and record.error:
        outcome.error = record.error
    return outcome, record


def run_restore(
    *,
    backup_id: str | None = None,
    latest_verified_of: str | None = None,
    to_target: str | None = None,
    to_dsn: str | None = None,
    confirm: str | None = None,
    jobs: int = 1,
    verbose: bool = False,
) -> JobOutcome:
    if to_dsn:
        os.environ[CLI_RESTORE_DSN_ENV] = to_dsn
    op_config = {
        "backup_id": backup_id, "latest_verified_of": latest_verified_of, "to_target": to_target,
        "to_dsn_env": CLI_RESTORE_DSN_ENV if to_dsn else None, "confirm": confirm, "jobs": jobs,
    }
    # Tagged with the destination target so the run queue never overlaps it with that target's backups.
    tags = run_tags(to_target)
    return _execute("restore", {"ops": {"safety_backup": {"config": op_config}}}, tags, verbose,
                    here=to_dsn is not None, output="restore_backup")


def run_retention(*, dry_run: bool, target: str | None = None, verbose: bool = False) -> JobOutcome:
    config = {"ops": {"apply_retention_policy": {"config": {"dry_run": dry_run, "target": target}}}}
    return _execute("retention", config, {}, verbose, output="apply_retention_policy")


def run_drill(target: str | None = None, backup_id: str | None = None, verbose: bool = False) -> JobOutcome:
    """One drill run per target (its partition): of `target`, of backup_id's target, or of every configured target."""
    tagged = target or (history().get(backup_id).target if backup_id else None)
    if tagged is None:
        outcomes = [run_drill(name, verbose=verbose) for name in configured_targets()]
        failed = [o for o in outcomes if not o.success]
        return JobOutcome(not failed, (failed or outcomes)[-1].run_id if outcomes else "",
                          "; ".join(o.error or "failed" for o in failed) or None)
    config = {"ops": {"pick_backup": {"config": {"target": target, "backup_id": backup_id}}}}
    return _execute("drill", config, run_tags(tagged), verbose)


def backup_json(record: BackupRecord) -> dict:
    """The CLI's JSON shape for one backup: the history row with friendlier key names."""
    out = record.to_dict()
    out["backup_id"] = out.pop("id")
    out["started_at"] = out.pop("timestamp")
    out["archive_uri"] = out.get("archive_uri")
    return out


def parse_duration(text: str) -> float:
    """'30m', '90s', '1h', or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise ConfigError(f"timeout {text!r} is not a duration: use e.g. 90s, 30m or 1h") from None


def wait_for_migration_backup(event_id: str, timeout_s: float, poll_s: float = 2.0) -> tuple[bool, str]:
    """Block until the event's pre-migration backup is completed and verified (True) or has failed (False)."""
    import dagster as dg

    store = history()
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while True:
            event = store.get_migration_event(event_id)
            if event.backup_id:
                record = store.get(event.backup_id)
                if record.status == "failed" or record.verification_status == "failed":
                    return False, f"pre-migration backup {record.id} failed: {record.error or record.verification_detail}"
                if record.status == "completed" and record.verification_status in ("verified", "checksum_ok"):
                    return True, f"pre-migration backup {record.id} is {record.verification_status}: {record.manifest_uri}"
            if event.status == "failed":
                return False, f"pre-migration backup for {event.migration_id} failed: {event.error}"
            runs = instance.get_runs(filters=dg.RunsFilter(tags={MIGRATION_EVENT_TAG: event_id}))
            failed = [r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
            if failed and not event.backup_id:
                return False, f"the pre-migration backup run {failed[0].run_id} {failed[0].status.value.lower()} before it started"
            if time.monotonic() > deadline:
                hint = "" if runs else " (no run was launched: is the Dagster daemon running?)"
                return False, f"timed out after {timeout_s:.0f}s waiting for the pre-migration backup{hint}"
            time.sleep(poll_s)
