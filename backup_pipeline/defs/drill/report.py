"""Recording a drill: the history row, and asset-check results on `backups/<target>`.

A drill that could not run is recorded as a drill error and reports no
check results at all: "not restorable" would be a verdict it has no evidence for.
"""

import dagster as dg

from backup_pipeline.core.drill import DrillResult
from backup_pipeline.core.history import HistoryStore
from backup_pipeline.resources import backup_asset_key

DRILL_CHECKS = ("restorable", "row_counts_match", "assertions_pass")


def drill_check_evaluations(target: str, result: DrillResult) -> list[dg.AssetCheckEvaluation]:
    key = backup_asset_key(target)
    comparison = result.comparison.to_dict() if result.comparison else {}
    outcomes = {
        "restorable": (result.restorable, {
            "reason": result.reason,
            "skipped_extensions": ", ".join(result.skipped_extensions) or "none",
            "restore_errors": "\n".join(result.restore_errors[:20]) or "none",
            "restore_seconds": result.restore_seconds or 0.0,
        }),
        "row_counts_match": (result.row_counts_match, {
            "mismatches": dg.MetadataValue.json(comparison.get("row_count_mismatches") or {}),
            "objects": dg.MetadataValue.json({k: comparison.get(k) for k in ("missing", "unexpected", "sequences_behind")}),
        }),
        "assertions_pass": (result.restorable and result.assertions_pass, {
            "failed": "\n".join(f"{a.name}: {a.detail}" for a in result.assertions if not a.ok) or "none",
            "run": len(result.assertions),
        }),
    }
    return [
        dg.AssetCheckEvaluation(
            asset_key=key, check_name=name, passed=bool(passed), metadata={"backup_id": result.backup_id, **meta},
            severity=dg.AssetCheckSeverity.ERROR,
        )
        for name, (passed, meta) in outcomes.items()
    ]


def record_drill(context: dg.OpExecutionContext, history: HistoryStore, target: str,
                 result: DrillResult) -> list[dg.AssetCheckEvaluation]:
    """Record the drill in history; returns its check results for the op to yield (see backup_event)."""
    try:
        history.record_drill(
            result.backup_id,
            passed=result.passed,
            detail=result.to_detail(),
            drill_seconds=result.restore_seconds,
            restored_bytes=result.restored_bytes,
        )
    except ValueError as exc:  # history disagrees with storage (e.g. the row was closed as failed)
        context.log.warning(f"Drill result not recorded in history: {exc}")
    if result.skipped_extensions:
        context.log.warning(f"Drill skipped extensions the drill server lacks: {', '.join(result.skipped_extensions)}")
    (context.log.info if result.passed else context.log.error)(f"Drill of {result.backup_id}: {result.reason}")
    return drill_check_evaluations(target, result)


def record_drill_error(context: dg.OpExecutionContext, history: HistoryStore, target: str, backup_id: str,
                       reason: str) -> str:
    """Record a drill that could not run; returns the backup's verdict, which it leaves as it was."""
    try:
        verdict = history.record_drill_error(backup_id, reason).verification_status
    except (KeyError, ValueError) as exc:  # no such row, or not completed: nothing to keep a verdict on
        context.log.warning(f"Drill error not recorded in history: {exc}")
        verdict = "unknown"
    context.log.warning(f"Drill checks {', '.join(DRILL_CHECKS)} not run for backup {backup_id} of {target}: "
                        f"the drill could not run ({reason}); the backup's verdict ({verdict}) is unchanged")
    return verdict
