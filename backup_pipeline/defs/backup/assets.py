"""One asset per configured target, `backups/<target>`, materialized by the backup job's verify step.

The asset is declared (an AssetSpec), not computed: the `backup` op job, one
run per target partition, is what makes it (its verify step logs the
materialization after the drill, with the verdict and KPIs). Dagster 1.13 has
no way to keep that and light up the asset page's "Materialize" button and
Automations panel: both need a graph-backed asset; Materialize then launches
the implicit `__ASSET_JOB` (never `backup`) with no backup_pipeline/target tag,
so the run queue's one-run-per-target limit would not hold for it, and the
steps and config would move under the graph's name (`backup_chain.verify`,
ops.backup_chain.ops.dump.config) for alerts, the CLI and recovery. So the
asset says how it is made instead: its description and metadata link to the
`backup` launchpad (the target is the partition) and to its daily schedule.
Freshness is Dagster's FreshnessPolicy: a completed backup within BACKUP_MAX_AGE (core/freshness.py).
"""

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.core.freshness import BACKUP_MAX_AGE, hours
from backup_pipeline.defs.backup.jobs import BACKUP_JOB
from backup_pipeline.defs.backup.schedules import schedule_name
from backup_pipeline.runs import location_name


def backup_spec(name: str, dsn_env: str, storage_url: str, schedule: str | None = None) -> dg.AssetSpec:
    """`schedule` is the target's cron (UTC), None when it has no daily schedule."""
    location = f"/locations/{location_name()}"
    launchpad = f"{location}/jobs/{BACKUP_JOB}/playground"
    automation = (f"[{schedule_name(name)}]({location}/schedules/{schedule_name(name)}) (`{schedule}` UTC)"
                  if schedule else "none (this target has no schedule)")
    return dg.AssetSpec(
        key=["backups", name],
        group_name="backups",
        description=f"Backups of target {name} (database URL from ${dsn_env}), made by the `{BACKUP_JOB}` job: "
        f"[launch it]({launchpad}) for partition `{name}`. Daily schedule: {automation}. A completed backup is "
        f"expected within {hours(BACKUP_MAX_AGE)}. The job's verify step reports this asset after the drill, "
        "so Dagster lists it as external: no Materialize button and no automations here.",
        metadata={
            "storage": storage_url,
            "dsn_env": dsn_env,
            "launch": dg.MetadataValue.url(launchpad),
            "schedule": f"{schedule_name(name)} ({schedule} UTC)" if schedule else "none",
        },
        kinds={"postgres"},
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=BACKUP_MAX_AGE),
    )


@dg.definitions
def backup_assets() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(assets=[backup_spec(t.name, t.dsn_env, t.storage_url, t.schedule)
                                  for t in settings.targets.values()])
