"""One asset per configured target, `backups/<target>`, materialized by the backup job."""

import dagster as dg

from backup_pipeline.core.config import load_settings


@dg.definitions
def backup_assets() -> dg.Definitions:
    settings = load_settings()
    return dg.Definitions(
        assets=[
            dg.AssetSpec(
                key=["backups", target.name],
                group_name="backups",
                description=f"Backups of target {target.name} (database URL from ${target.dsn_env}).",
                metadata={"storage": target.storage_url, "dsn_env": target.dsn_env},
                kinds={"postgres"},
            )
            for target in settings.targets.values()
        ]
    )
