"""One asset per configured target, `backups/<target>`, materialized by the backup job's verify step.

The asset is declared (an AssetSpec), not computed: the `backup` op job, one
run per target partition, is what makes it (its verify step logs the
materialization). A graph-backed asset would make "Materialize" and the
Automations panel work, but would be a second job shape (step keys, config
paths, run tags) for alerts, recovery and the run queue to know. Freshness is
Dagster's FreshnessPolicy: a completed backup within BACKUP_MAX_AGE (core/freshness.py).
"""

import dagster as dg

from backup_pipeline.core.config import load_settings
from backup_pipeline.core.freshness import BACKUP_MAX_AGE, hours


def backup_spec(name: str, dsn_env: str, storage_url: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=["backups", name],
        group_name="backups",
        description=f"Backups of target {name} (database URL from ${dsn_env}): launch the `backup` job for "
        f"partition {name} to make one; a completed backup is expected within {hours(BACKUP_MAX_AGE)}.",
        metadata={"storage": storage_url, "dsn_env": dsn_env},
        kinds={"postgres"},
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=BACKUP_MAX_AGE),
    )


@dg.definitions
def backup_assets() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(assets=[backup_spec(t.name, t.dsn_env, t.storage_url) for t in settings.targets.values()])
