"""Asset checks on `backups/<target>`: the last drill's verdicts, freshness and the row-count tripwire.

The drill ops report restorable / row_counts_match / assertions_pass as they
happen; these definitions make the same checks (plus freshness) executable
from history, and an hourly schedule keeps freshness current.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.core.history import COMPLETED
from backup_pipeline.defs.backup.tripwire import CHECK_NAME as TRIPWIRE_CHECK
from backup_pipeline.defs.backup.tripwire import check_result as tripwire_check_result
from backup_pipeline.defs.drill.report import DRILL_CHECKS
from backup_pipeline.resources import BackupSettings

BACKUP_MAX_AGE = timedelta(hours=26)
DRILL_MAX_AGE = timedelta(days=8)


def _age(ts: datetime | None) -> str:
    return "never" if ts is None else f"{(datetime.now(UTC) - ts).total_seconds() / 3600:.1f} hours ago"


def freshness_results(target: str, history) -> list[dg.AssetCheckResult]:
    key = dg.AssetKey(["backups", target])
    now = datetime.now(UTC)
    backup = history.latest(target, status=COMPLETED)
    backup_at = backup.finished_at or backup.timestamp if backup else None
    drill = history.latest_verified(target)
    drill_at = drill.drilled_at if drill else None
    return [
        dg.AssetCheckResult(
            asset_key=key, check_name="backup_fresh", passed=bool(backup_at and now - backup_at <= BACKUP_MAX_AGE),
            metadata={"last_completed_backup": _age(backup_at), "limit_hours": 26}, severity=dg.AssetCheckSeverity.ERROR,
        ),
        dg.AssetCheckResult(
            asset_key=key, check_name="drill_fresh", passed=bool(drill_at and now - drill_at <= DRILL_MAX_AGE),
            metadata={"last_passing_drill": _age(drill_at), "limit_days": 8}, severity=dg.AssetCheckSeverity.ERROR,
        ),
    ]


def drill_results(target: str, history) -> list[dg.AssetCheckResult]:
    key = dg.AssetKey(["backups", target])
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
    key = dg.AssetKey(["backups", target])
    specs = [dg.AssetCheckSpec(name, asset=key) for name in (*DRILL_CHECKS, "backup_fresh", "drill_fresh")]
    specs.append(dg.AssetCheckSpec(TRIPWIRE_CHECK, asset=key, description="No table disappeared or lost more than "
                                   "the target's tripwire_drop_share of its rows since the previous backup"))

    @dg.multi_asset_check(specs=specs, name=f"backup_checks_{target.replace('-', '_')}")
    def _checks(backup_settings: BackupSettings):
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        yield from drill_results(target, history)
        yield from freshness_results(target, history)
        yield tripwire_check_result(settings.target(target), history)

    return _checks


@dg.definitions
def backup_checks() -> dg.Definitions:
    checks = [build_checks(name) for name in sorted(load_settings().targets)]
    job = dg.define_asset_job("check_backups", selection=dg.AssetSelection.all_asset_checks())
    return dg.Definitions(
        asset_checks=checks,
        jobs=[job],
        schedules=[
            dg.ScheduleDefinition(
                name="hourly_backup_checks", cron_schedule="15 * * * *", execution_timezone="UTC", job=job,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Freshness: a completed backup within 26 h, a passing drill within 8 days.",
            )
        ] if checks else [],
    )
