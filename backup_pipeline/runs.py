"""CLI runs as first-class Dagster runs: created with the code location's origin, queued when a daemon runs.

A run made here carries the same remote origin as one launched from the webserver (location
`backup_pipeline`, module backup_pipeline.definitions), so the daemon's run queue can launch it and the
run-status sensors (alerts) match it. The design decision: no workspace and no gRPC code server are loaded
to build that origin (seconds of start-up); it is written from workspace.yaml's location, which is all the
queue and the sensors look at. With no daemon alive the SAME run executes in this process.

Start-up: a launch loads the Definitions once (Dagster's own cache on the job, emptied when the configured
targets change, so a process that rewrites the targets file between runs never runs a stale job), and this
process captures no compute logs: stdout/stderr of a run executed here go straight to the terminal instead
of through files mirrored back by `tail` (Dagster's LocalComputeLogManager starts a `tail` and a `python3`
watcher per stream). What the UI loses for such runs is only its raw stdout/stderr view; the event log
(every context.log line, step failures with their tracebacks) is unchanged. Runs the daemon executes keep
the instance's compute-log setting. With SQLite storage the run's event database is kept open while the
run executes here: SQLite checkpoints and fsyncs a WAL database whenever its last connection closes, and
Dagster opens and closes one per event (~50 a run), which cost ~10 ms each on a busy disk.
"""

import contextlib
import os
import pickle
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.workspace.load import location_origin_from_module_name

from backup_pipeline.core.config import load_settings
from backup_pipeline.core.errors import BackupPipelineError, ConfigError
from backup_pipeline.dagster_home import DAEMON_HEARTBEAT_TOLERANCE_S, daemon_alive
from backup_pipeline.defs.alerts.failed_run import step_error
from backup_pipeline.resources import TARGET_TAG

MODULE = "backup_pipeline.definitions"
ATTRIBUTE = "defs"
# Must equal the location name the deployment's workspace gives the code (workspace.yaml, pyproject's dg config).
LOCATION_ENV = "BACKUP_PIPELINE_LOCATION_NAME"
DEFAULT_LOCATION = "backup_pipeline"
NO_DAEMON = "no dagster-daemon is running: running in this process"
_DONE = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
_NO_COMPUTE_LOGS = {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}
_loaded_for: object = None  # (job, configured targets) whose Definitions Dagster's cache may hold


class RunOutputMissing(BackupPipelineError):
    """A queued run succeeded but wrote its outputs where this process cannot read them."""


class RunInterrupted(BackupPipelineError):
    """The command stopped waiting; the queued or running run goes on in the daemon."""


@dataclass
class FinishedRun:
    run_id: str
    success: bool
    in_process: bool
    error: str | None
    outputs: dict[str, object]


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first failed step's message for people, else the run failure's (e.g. exceeded max runtime)."""
    steps = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    if steps:
        return step_error(steps[0].dagster_event)
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    if failures and failures[-1].dagster_event.message:
        return failures[-1].dagster_event.message.strip().splitlines()[0]
    run = instance.get_run_by_id(run_id)
    return f"run {run_id} {run.status.value.lower() if run else 'vanished'}; see the Dagster UI for details"


def step_output(instance: dg.DagsterInstance, run_id: str, step: str, name: str = "result") -> object:
    """A step's output as the run's fs_io_manager stored it under the instance's storage folder."""
    path = Path(instance.storage_directory()) / run_id / step / name
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        raise RunOutputMissing(f"run {run_id} succeeded but its {step} output is not in {path} (does the daemon "
                               "run on another machine?): see the run's logs in the Dagster UI") from None


def location_name() -> str:
    return os.environ.get(LOCATION_ENV) or DEFAULT_LOCATION


def _recon_repository() -> ReconstructableRepository:
    return ReconstructableRepository.for_module(MODULE, ATTRIBUTE, os.getcwd())


def _recon_job(job_name: str) -> ReconstructableJob:
    """The job; its Definitions are loaded again only when the job or the configured targets changed."""
    global _loaded_for
    recon_job = _recon_repository().get_reconstructable_job(job_name)
    try:
        targets: object = tuple(sorted(load_settings().targets.items()))
    except ConfigError:
        targets = object()  # loading the Definitions raises it again, as it did before
    if (recon_job, targets) != _loaded_for:
        ReconstructableJob.get_definition.cache_clear()  # type: ignore[attr-defined]
        ReconstructableJob.get_repository_definition.cache_clear()  # type: ignore[attr-defined]
        _loaded_for = (recon_job, targets)
    return recon_job


def _instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance, capturing no compute logs in this process (see the module docstring)."""
    home = os.environ["DAGSTER_HOME"]  # ensure_dagster_home set it
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides={"compute_logs": _NO_COMPUTE_LOGS}))


@contextlib.contextmanager
def _event_logs_kept_open(instance: dg.DagsterInstance, run_id: str):
    """The run's SQLite event databases held open by one idle connection, so no event's close checkpoints them."""
    storage = instance.event_log_storage
    with contextlib.ExitStack() as held:
        if isinstance(storage, SqliteEventLogStorage):
            try:
                instance.all_logs(run_id)  # creates the run's database now, as its first event would
                for path in (storage.path_for_shard(run_id), storage.path_for_shard(INDEX_SHARD_NAME)):
                    if os.path.exists(path):
                        conn = held.enter_context(contextlib.closing(sqlite3.connect(path, timeout=1)))
                        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # joins the WAL, holds no lock
            except Exception:  # noqa: BLE001 - only a speed-up: the run goes on without it
                pass
        yield


def _remote_origin(job_name: str, repository_name: str) -> RemoteJobOrigin:
    code_location = location_origin_from_module_name(MODULE, None, None, location_name())
    return RemoteJobOrigin(RemoteRepositoryOrigin(code_location, repository_name), job_name)


def launch(job_name: str, run_config: dict, tags: dict[str, str], *, here: bool = False,
           in_process_config: dict | None = None, outputs: tuple[str, ...] = ()) -> FinishedRun:
    """Create the run with its origin; submit it to the queue and wait if a daemon is alive, else execute it here.

    `here` forces this process (the run needs something only this process has, e.g. a DSN from argv);
    `in_process_config` is merged into the run config only when the run executes here (console log level);
    `outputs` names the steps whose outputs a successful run returns.
    """
    recon_job = _recon_job(job_name)
    with _instance() as instance:
        return _launch(instance, recon_job, run_config, tags, here, in_process_config or {}, outputs)


def _launch(instance, recon_job, run_config, tags, here, in_process_config, outputs) -> FinishedRun:
    job_def = recon_job.get_definition()  # cached: execute_run below takes the same one
    queued = not here and daemon_alive(instance)
    if not queued and not here:
        print(NO_DAEMON, file=sys.stderr)
    config = run_config if queued else {**run_config, **in_process_config}
    run = instance.create_run_for_job(
        job_def, run_config=config, tags=tags,
        remote_job_origin=_remote_origin(job_def.name, recon_job.get_repository_definition().name),
        job_code_origin=recon_job.get_python_origin(),
    )
    if queued:
        instance.submit_run(run.run_id, workspace=None)  # the queued coordinator only enqueues
        status = _wait(instance, run.run_id, tags.get(TARGET_TAG))
    else:
        with _event_logs_kept_open(instance, run.run_id):
            status = execute_run(recon_job, run, instance).dagster_run.status
    if status != dg.DagsterRunStatus.SUCCESS:
        return FinishedRun(run.run_id, False, not queued, failure_message(instance, run.run_id), {})
    return FinishedRun(run.run_id, True, not queued, None, {step: step_output(instance, run.run_id, step) for step in outputs})


def _wait(instance: dg.DagsterInstance, run_id: str, target: str | None, poll_s: float = 1.0) -> dg.DagsterRunStatus:
    said_queued = said_no_daemon = False
    try:
        while (run := instance.get_run_by_id(run_id)).status not in _DONE:
            if run.status == dg.DagsterRunStatus.QUEUED:
                if not said_queued and target and (ahead := _runs_holding(instance, target, run_id)):
                    print(f"queued: run {ahead[0]} of target {target} is in progress; waiting for it", file=sys.stderr)
                    said_queued = True
                if not said_no_daemon and not daemon_alive(instance):
                    print(f"run {run_id} is queued but no dagster-daemon has been seen for "
                          f"{DAEMON_HEARTBEAT_TOLERANCE_S:.0f} s: start one (dagster-daemon run)", file=sys.stderr)
                    said_no_daemon = True
            time.sleep(poll_s)
    except KeyboardInterrupt:
        raise RunInterrupted(f"stopped waiting for run {run_id}: it goes on in the daemon; "
                             "terminate it in the Dagster UI if it must stop") from None
    return run.status


def _runs_holding(instance: dg.DagsterInstance, target: str, run_id: str) -> list[str]:
    busy = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    runs = instance.get_runs(filters=dg.RunsFilter(tags={TARGET_TAG: target}, statuses=busy), limit=5)
    return [r.run_id for r in runs if r.run_id != run_id]
