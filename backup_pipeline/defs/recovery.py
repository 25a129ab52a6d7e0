"""Clean recovery from killed runs, called first by every job's first op (and by `list`/`status`).

The run takes its lock (core/liveness.py), then resolves the history rows and
stage folders of runs that are provably dead (core/recovery.py). Recovery
never fails the run that does it: a problem is logged and retried next time.
"""

from collections.abc import Callable

import dagster as dg

from backup_pipeline.core import liveness
from backup_pipeline.core.config import Settings
from backup_pipeline.core.history import HistoryStore
from backup_pipeline.core.recovery import Recovery, recover
from backup_pipeline.core.redact import redact_text
from backup_pipeline.core.storage import open_storage

_TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def dagster_run_state(instance: dg.DagsterInstance | None) -> Callable[[str], str | None]:
    def state(run_id: str) -> str | None:
        if instance is None:
            return None
        run = instance.get_run_by_id(run_id)
        if run is None:
            return liveness.RUN_MISSING
        return liveness.RUN_TERMINAL if run.status in _TERMINAL else liveness.RUN_ACTIVE
    return state


def recover_dead_runs(settings: Settings, history: HistoryStore, instance: dg.DagsterInstance | None,
                      current_run: str | None = None, log: Callable[[str], None] = lambda _m: None,
                      warn: Callable[[str], None] = lambda _m: None) -> Recovery | None:
    """Resolve dead runs' rows and stages; returns None (after warning) if recovery itself failed."""
    judge = liveness.RunJudge(settings.stage_dir, dagster_run_state(instance), current_run=current_run)

    def configured(target: str) -> str | None:
        return settings.targets[target].storage_url if target in settings.targets else None

    try:
        found = recover(history, judge, open_storage=lambda url: open_storage(url, settings.s3),
                        configured_storage=configured)
    except Exception as exc:  # noqa: BLE001 - recovery must never stop the run doing it
        warn(f"recovering from dead runs failed, will retry next run: {redact_text(f'{type(exc).__name__}: {exc}')}")
        return None
    _fail_dead_dagster_runs(instance, judge, current_run, log, warn)
    for message in found.messages:
        log(message)
    for message in found.warnings:
        warn(message)
    for path in found.stage_dirs_removed:
        log(f"deleted the stage {path} of a dead run")
    return found


def _fail_dead_dagster_runs(instance, judge: liveness.RunJudge, current_run: str | None, log, warn) -> None:
    """A killed run stays STARTED in Dagster forever; mark it failed so the UI and failure sensors see it."""
    if instance is None:
        return
    for run_id in judge.lock_free_runs():
        try:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status not in _TERMINAL:
                instance.report_run_failed(run, message=f"the run's process died before the run finished "
                                                        f"(its run lock was free when {current_run or 'the CLI'} looked)")
                log(f"marked Dagster run {run_id} failed: its process died")
        except Exception as exc:  # noqa: BLE001
            warn(f"cannot mark the dead Dagster run {run_id} failed: {redact_text(str(exc))}")


def start_run(context: dg.OpExecutionContext, settings: Settings, history: HistoryStore) -> None:
    """First thing in a job's first op: hold this run's lock, then clean up after dead runs."""
    try:
        liveness.hold_run_lock(settings.stage_dir, context.run_id)
    except OSError as exc:
        context.log.warning(f"cannot take the run lock under {settings.stage_dir}: {exc}; "
                            "a death of this run will be noticed only through Dagster's run status")
    recover_dead_runs(settings, history, context.instance, context.run_id, context.log.info, context.log.warning)


def note_storage(context: dg.OpExecutionContext, target: str, storage_url: str) -> None:
    try:
        liveness.note_storage(context.run_id, target, storage_url)
    except OSError as exc:
        context.log.warning(f"cannot record this run's storage in its lock folder: {exc}")


def recover_outside_runs(history: HistoryStore, warn: Callable[[str], None] = lambda _m: None) -> None:
    """For `list` and `status`: resolve dead rows first, so no dead run shows as running. Cheap without any."""
    if not history.running_backups():
        return
    from backup_pipeline.core.config import load_settings

    try:
        settings = load_settings()
    except Exception as exc:  # noqa: BLE001 - listing must work with a broken targets file
        warn(f"cannot check running backups: {exc}")
        return
    try:
        instance = dg.DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - without it, only run locks count as evidence
        warn(f"cannot open the Dagster instance: {redact_text(str(exc))}")
        recover_dead_runs(settings, history, None, warn=warn)
        return
    with instance:
        recover_dead_runs(settings, history, instance, warn=warn)
