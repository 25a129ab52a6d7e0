"""Turning a failed Dagster run into an `Alert`: target, job, failed steps and their user-facing errors.

The error shown is the `dg.Failure` description the ops already wrote for
people (or the original exception, never Dagster's wrapper); redaction
happens later, in `send_alert`.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from backup_pipeline.core.alerts import Alert, run_url
from backup_pipeline.resources import TARGET_TAG

# Op names: in an asset run the steps are <graph node>.verify etc. (defs/backup/assets.py).
VERIFICATION_STEPS = frozenset({"verify", "restore_drill"})
# Failure metadata key the drill ops set when a drill could not run (no verdict on the backup).
DRILL_ERROR_KEY = "drill_error"
TARGET_KEYS = ("target", "to_target", "latest_verified_of")  # backup/drill, restore


def _op_configs(run: dg.DagsterRun) -> Iterator[Mapping[str, Any]]:
    for op in ((run.run_config or {}).get("ops") or {}).values():
        if isinstance(op, Mapping) and isinstance(op.get("config"), Mapping):
            yield op["config"]


def run_target(run: dg.DagsterRun) -> str | None:
    if run.tags.get(TARGET_TAG):
        return run.tags[TARGET_TAG]
    for key in TARGET_KEYS:
        for config in _op_configs(run):
            if isinstance(config.get(key), str) and config[key]:
                return config[key]
    return None


def run_dsn_envs(run: dg.DagsterRun) -> list[str]:
    """Variables named by the run's config as holding DSNs: their values must be masked too."""
    return [value for config in _op_configs(run) for key, value in config.items()
            if key.endswith("dsn_env") and isinstance(value, str) and value]


def step_error(event: dg.DagsterEvent) -> str:
    data = event.event_specific_data
    if getattr(data, "user_failure_data", None) and data.user_failure_data.description:
        return data.user_failure_data.description
    error = getattr(data, "error", None)
    if error is None:
        return event.message or "step failed"
    # An exception raised in an op arrives wrapped; its cause is what the op raised.
    if error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    return error.message.strip()


def is_drill_error(event: dg.DagsterEvent) -> bool:
    data = getattr(event.event_specific_data, "user_failure_data", None)
    return bool(data and DRILL_ERROR_KEY in (data.metadata or {}))


def failed_run_alert(
    run: dg.DagsterRun, failure_event: dg.DagsterEvent, step_failures: Sequence[dg.DagsterEvent],
    backup_id: str | None = None,
) -> Alert:
    steps = list(dict.fromkeys(event.step_key for event in step_failures if event.step_key))
    errors = [step_error(event) for event in step_failures]
    if not errors:
        job_error = getattr(failure_event.event_specific_data, "error", None)
        errors = [failure_event.message or "run failed"] + ([job_error.message.strip()] if job_error else [])
    if len(step_failures) > 1:
        errors = [f"{event.step_key}: {error}" for event, error in zip(step_failures, errors, strict=True)]
    if step_failures and all(is_drill_error(event) for event in step_failures):
        kind = "drill_error"
    else:
        ops = {step.rsplit(".", 1)[-1] for step in steps}
        kind = "verification_failed" if VERIFICATION_STEPS & ops else "run_failed"
    return Alert(
        kind=kind,
        target=run_target(run),
        job=run.job_name,
        step=", ".join(steps) or None,
        error="\n".join(errors),
        run_id=run.run_id,
        run_url=run_url(run.run_id),
        backup_id=backup_id,
    )
