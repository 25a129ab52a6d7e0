"""Asset checks on `backups/<target>`: the last drill's verdicts, drill freshness and the row-count tripwire.

The drill ops report restorable / row_counts_match / assertions_pass as they
happen (blocking: a failed drill stops anything downstream); these definitions
make the same checks executable from history. Backup freshness is no check
but the asset's FreshnessPolicy (defs/backup/assets.py); drill_fresh is
checked daily by its own small job.
"""

from datetime import UTC, datetime

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.core.freshness import DRILL_MAX_AGE, days
from backup_pipeline.defs.backup.tripwire import CHECK_NAME as TRIPWIRE_CHECK
from backup_pipeline.defs.backup.tripwire import check_result as tripwire_check_result
from backup_pipeline.defs.drill.report import DRILL_CHECKS
from backup_pipeline.resources import BackupSettings, backup_asset_key

DRILL_FRESH = "drill_fresh"
DRILL_CHECK_TEXT = {
    "restorable": "The last drill restored the backup into a throwaway PostgreSQL",
    "row_counts_match": "The restored tables, objects and row counts match the manifest",
    "assertions_pass": "The target's assertion queries pass on the restored copy",
}


def _age(ts: datetime | None) -> str:
    return "never" if ts is None else f"{(datetime.now(UTC) - ts).total_seconds() / 3600:.1f} hours ago"


def drill_fresh_result(target: str, history, drills: bool = True) -> dg.AssetCheckResult:
    """Passed when a drill passed within DRILL_MAX_AGE; a target with `drill: false` expects none, so it passes."""
    drill = history.latest_verified(target)
    drill_at = drill.drilled_at if drill else None
    fresh = bool(drill_at and datetime.now(UTC) - drill_at <= DRILL_MAX_AGE)
    return dg.AssetCheckResult(
        asset_key=backup_asset_key(target), check_name=DRILL_FRESH, passed=fresh or not drills,
        metadata={"last_passing_drill": _age(drill_at),
                  "limit": days(DRILL_MAX_AGE) if drills else "none: the target has drill: false"},
        severity=dg.AssetCheckSeverity.ERROR,
    )


def drill_results(target: str, history) -> list[dg.AssetCheckResult]:
    key = backup_asset_key(target)
    last = history.last_drill(target)
    detail = (last.drill_detail or {}) if last else {}
    return [
        dg.AssetCheckResult(
            asset_key=key, check_name=name, passed=bool(detail.get(name)),
            metadata={"backup_id": last.id if last else "none", "reason": detail.get("reason", "no drill yet")},
        )
        for name in DRILL_CHECKS
    ]


def build_checks(target: str) -> dg.AssetChecksDefinition:
    key = backup_asset_key(target)
    specs = [dg.AssetCheckSpec(name, asset=key, blocking=True, description=DRILL_CHECK_TEXT[name]) for name in DRILL_CHECKS]
    specs.append(dg.AssetCheckSpec(DRILL_FRESH, asset=key, description=f"A passing drill within {days(DRILL_MAX_AGE)}"))
    specs.append(dg.AssetCheckSpec(TRIPWIRE_CHECK, asset=key, description="No table disappeared or lost more than "
                                   "the target's tripwire_drop_share of its rows since the previous backup"))

    @dg.multi_asset_check(specs=specs, name=f"backup_checks_{target.replace('-', '_')}", can_subset=True)
    def _checks(context: dg.AssetCheckExecutionContext, backup_settings: BackupSettings):
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        results = [*drill_results(target, history), drill_fresh_result(target, history, settings.target(target).drill),
                   tripwire_check_result(settings.target(target), history)]
        yield from (r for r in results if r.check_name in {k.name for k in context.selected_asset_check_keys})

    return _checks


@dg.definitions
def backup_checks() -> dg.Definitions:
    targets = sorted(load_settings().targets)
    checks = [build_checks(name) for name in targets]
    if not checks:
        return dg.Definitions()
    # Backup freshness is the asset's FreshnessPolicy; a drill is no materialization, so its freshness is a check.
    job = dg.define_asset_job("check_drill_freshness", selection=dg.AssetSelection.checks(
        *[dg.AssetCheckKey(backup_asset_key(name), DRILL_FRESH) for name in targets]))
    return dg.Definitions(
        asset_checks=checks,
        jobs=[job],
        schedules=[
            dg.ScheduleDefinition(
                name="daily_drill_freshness", cron_schedule="15 6 * * *", execution_timezone="UTC", job=job,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"Check drill_fresh: a passing drill within {days(DRILL_MAX_AGE)}.",
            )
        ],
    )
