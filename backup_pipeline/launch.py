"""Running the jobs in this process against the configured Dagster instance.

The CLI and the demo use these, so their runs show up in the Dagster UI like
any other. Secrets given on the command line are put in this process's
environment under a fixed variable name and only that name enters run config.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from backup_pipeline.core.history import BackupRecord, HistoryStore, default_history_url
from backup_pipeline.defs.backup.jobs import backup_job
from backup_pipeline.defs.drill.jobs import drill_job
from backup_pipeline.defs.restore.jobs import restore_job
from backup_pipeline.defs.retention.jobs import retention_job
from backup_pipeline.core.errors import ConfigError
from backup_pipeline.resources import MIGRATION_EVENT_TAG, TARGET_TAG, BackupSettings

CLI_DSN_ENV = "BACKUP_PIPELINE_CLI_DSN"
CLI_RESTORE_DSN_ENV = "BACKUP_PIPELINE_CLI_RESTORE_DSN"
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class JobOutcome:
    success: bool
    run_id: str
    error: str | None
    output: object = None


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to ~/.backup_pipeline/dagster_home so runs persist and show in the UI."""
    home = os.environ.get("DAGSTER_HOME") or str(Path.home() / ".backup_pipeline" / "dagster_home")
    os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    instance_yaml = Path(home) / "dagster.yaml"
    if not instance_yaml.exists():
        # The repository's dagster.yaml adds the run queue; this is the minimum for CLI runs.
        instance_yaml.write_text("telemetry:\n  enabled: false\n")
    return Path(home)


def history() -> HistoryStore:
    ensure_dagster_home()
    return HistoryStore(default_history_url())


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error:
                return data.error.message.strip().splitlines()[-1]
    return "the run failed; see the Dagster UI for details"


def _execute(job: dg.JobDefinition, run_config: dict, tags: dict[str, str], verbose: bool) -> dg.ExecuteInProcessResult:
    """Run one job definition directly (loading the whole defs folder would only cost start-up time)."""
    ensure_dagster_home()
    config = run_config if verbose else {**run_config, **_QUIET}
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(
            run_config=config,
            instance=instance,
            tags=tags,
            resources={"backup_settings": BackupSettings()},
            raise_on_error=False,
        )


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
    result = _execute(backup_job, {"ops": {"dump": {"config": op_config}}}, {TARGET_TAG: target}, verbose)
    record = history().find_by_run(result.run_id, target)
    error = None if result.success else (record.error if record and record.error else _failure_message(result))
    if not result.success and record and record.status == "completed":
        record = history().get(record.id)  # verification was recorded after the first read
        error = _failure_message(result)
    return JobOutcome(result.success, result.run_id, error), record


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
    tags = {TARGET_TAG: to_target} if to_target else {}
    result = _execute(restore_job, {"ops": {"safety_backup": {"config": op_config}}}, tags, verbose)
    if not result.success:
        return JobOutcome(False, result.run_id, _failure_message(result))
    return JobOutcome(True, result.run_id, None, result.output_for_node("restore_backup"))


def run_retention(*, dry_run: bool, target: str | None = None, verbose: bool = False) -> JobOutcome:
    config = {"ops": {"apply_retention_policy": {"config": {"dry_run": dry_run, "target": target}}}}
    result = _execute(retention_job, config, {}, verbose)
    if not result.success:
        return JobOutcome(False, result.run_id, _failure_message(result))
    return JobOutcome(True, result.run_id, None, result.output_for_node("apply_retention_policy"))


def run_drill(target: str | None = None, backup_id: str | None = None, verbose: bool = False) -> JobOutcome:
    tags = {TARGET_TAG: target} if target else {}
    config = {"ops": {"drill_latest": {"config": {"target": target, "backup_id": backup_id}}}}
    result = _execute(drill_job, config, tags, verbose)
    return JobOutcome(result.success, result.run_id, None if result.success else _failure_message(result))


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
