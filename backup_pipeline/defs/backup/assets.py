"""One asset per configured target, `backups/<target>`: the backup chain as a graph-backed asset.

Its graph is the backup job's chain (dump -> upload -> restore_drill -> verify
-> sync_standby) with the target bound by a config mapping, so the asset page's
"Materialize" runs a real backup with no config to type, and the target's daily
schedule (on the asset job `backup_<target>`) shows as its automation. The asset
is reported after the drill, with the verdict and KPIs, in every job shape: in
the partitioned `backup` job verify yields the materialization; in the asset's
own runs the graph's output is it (sync_standby yields it, with verify's report,
so the asset's checks run after it). Runs launched from the asset page (Dagster's
implicit `__ASSET_JOB`) get the target tag from the run queue (backup_pipeline/run_queue.py).
Freshness is Dagster's FreshnessPolicy: a completed backup within BACKUP_MAX_AGE (core/freshness.py)."""

import dagster as dg

from backup_pipeline.core.config import Target, load_settings
from backup_pipeline.core.freshness import BACKUP_MAX_AGE, hours
from backup_pipeline.core.vocabulary import BACKUP_TYPES
from backup_pipeline.defs.backup.jobs import BACKUP_JOB
from backup_pipeline.defs.backup.ops import dump, upload
from backup_pipeline.defs.drill.ops import restore_drill, verify
from backup_pipeline.defs.standby.ops import sync_standby
from backup_pipeline.resources import BACKUPS_PREFIX, TARGET_TAG, backup_asset_key
from backup_pipeline.runs import location_name


def _safe(target: str) -> str:
    return target.replace("-", "_")


def node_name(target: str) -> str:
    """The graph's node in asset runs: its steps are `<node>.dump`, `<node>.verify`, ..."""
    return f"backups__{_safe(target)}"


def asset_job_name(target: str) -> str:
    return f"backup_{_safe(target)}"


def schedule_name(target: str) -> str:
    return f"daily_backup_{_safe(target)}"


def asset_run_config(target: str, backup_type: str) -> dict:
    """Run config of an asset run of `target`: only the backup type (the graph binds the target)."""
    return {"ops": {node_name(target): {"config": {"type": backup_type}}}}


def backup_asset(target: Target) -> dg.AssetsDefinition:
    name = target.name
    location = f"/locations/{location_name()}"
    automation = (f"the daily schedule [{schedule_name(name)}]({location}/schedules/{schedule_name(name)}) "
                  f"(`{target.schedule}` UTC)" if target.schedule else "no schedule")

    def bind(config: dict) -> dict:
        return {"dump": {"config": {"target": name, "type": config["type"]}}}

    @dg.graph(
        name=node_name(name),
        config=dg.ConfigMapping(
            config_fn=bind,
            config_schema={"type": dg.Field(dg.Enum("BackupType", [dg.EnumValue(t) for t in BACKUP_TYPES]),
                                            default_value="manual", description="the backup's type")},
        ),
    )
    def _backup():
        staged = upload(dump())
        return sync_standby(verify(staged, restore_drill(staged)))

    description = (f"Backups of target {name} (database URL from ${target.dsn_env}): Materialize runs a backup "
                   f"(dump, upload, restore drill, verify), as do {automation} and the `{BACKUP_JOB}` job's "
                   f"partition `{name}`. A completed backup is expected within {hours(BACKUP_MAX_AGE)}.")
    metadata = {
        "storage": target.storage_url,
        "dsn_env": target.dsn_env,
        "schedule": f"{schedule_name(name)} ({target.schedule} UTC)" if target.schedule else "none",
    }
    policy = dg.FreshnessPolicy.time_window(fail_window=BACKUP_MAX_AGE)
    return dg.AssetsDefinition.from_graph(
        _backup, keys_by_output_name={"result": backup_asset_key(name)}, group_name=BACKUPS_PREFIX,
        descriptions_by_output_name={"result": description}, metadata_by_output_name={"result": metadata},
    ).map_asset_specs(lambda spec: dg.apply_freshness_policy(spec.replace_attributes(kinds={"postgres"}), policy))


def asset_job(target: Target):
    """The target's asset job (what its schedule runs), tagged with the target for the run queue."""
    return dg.define_asset_job(
        asset_job_name(target.name),
        selection=dg.AssetSelection.assets(backup_asset_key(target.name)).without_checks(),
        tags={TARGET_TAG: target.name},
        description=f"Back up target {target.name}: materialize backups/{target.name}.",
    )


@dg.definitions
def backup_assets() -> dg.Definitions:
    targets = list(load_settings().targets.values())
    return dg.Definitions(assets=[backup_asset(t) for t in targets], jobs=[asset_job(t) for t in targets])
