"""The retention step: expire old backups, delete their objects, sweep interrupted uploads."""

from datetime import UTC, datetime

import dagster as dg

from backup_pipeline.core.retention import RetentionPlan, apply_retention, find_incomplete, plan_retention
from backup_pipeline.defs.failures import failing_as
from backup_pipeline.defs.recovery import start_run
from backup_pipeline.resources import BackupSettings


class RetentionConfig(dg.Config):
    """dry_run lists exactly what would go without deleting anything."""

    dry_run: bool = False
    target: str | None = None


@dg.op(description="Expire backups past retention_until (never a target's newest verified one) and clean up.")
def apply_retention_policy(context: dg.OpExecutionContext, config: RetentionConfig, backup_settings: BackupSettings) -> dict:
    with failing_as():
        settings = backup_settings.load()
        history = backup_settings.history(settings)
        start_run(context, settings, history)
        now = datetime.now(UTC)
        targets = [config.target] if config.target else sorted(settings.targets)
        for name in targets:
            settings.target(name)
        plan: RetentionPlan = plan_retention(history, settings, now, targets=targets)
        for name in targets:
            url = settings.targets[name].storage_url
            find_incomplete(backup_settings.storage(settings, url), url, name, now, plan)
        apply_retention(plan, history, lambda url: backup_settings.storage(settings, url),
                        dry_run=config.dry_run, log=context.log.info)
    summary = plan.to_dict()
    context.add_output_metadata({
        "dry_run": config.dry_run,
        "expired": len(plan.expire),
        "kept_by_policy": len(plan.kept),
        "orphans_deleted": len(plan.orphans),
        "multipart_aborted": len(plan.incomplete_uploads),
        "plan": dg.MetadataValue.json(summary),
    })
    return summary
