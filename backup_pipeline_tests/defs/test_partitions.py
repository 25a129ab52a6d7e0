"""Runs partitioned by target, the asset telling the truth after the drill, freshness as a policy, the drill chain."""

from datetime import timedelta

import dagster as dg
import pytest

from backup_pipeline.core.freshness import BACKUP_MAX_AGE
from backup_pipeline.definitions import defs
from backup_pipeline.defs.partitions import PARTITION_TAG, run_tags
from backup_pipeline.resources import TARGET_TAG

TARGETS = {"shop": {"dsn_env": "SHOP_URL"}, "crm-db": {"dsn_env": "CRM_URL", "drill": False}}


def test_every_job_is_partitioned_by_target_and_each_partition_opens_valid(configure):
    configure(TARGETS, {"SHOP_URL": "postgresql://u@127.0.0.1:9/shop", "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    loaded = defs()
    for name in ("backup", "drill", "restore"):
        job = loaded.resolve_job_def(name)
        assert job.partitions_def.get_partition_keys() == ["crm-db", "shop"], name
        for target in ("crm-db", "shop"):
            config = job.partitioned_config.get_run_config_for_partition_key(target)
            assert dg.validate_run_config(job, config), (name, target)  # the launchpad's default, no required entry
            assert job.partitioned_config.get_tags_for_partition_key(target)[TARGET_TAG] == target


def test_without_targets_the_jobs_are_unpartitioned_and_take_the_target_from_config(backup_env):
    loaded = defs()
    assert loaded.resolve_job_def("backup").partitions_def is None
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(loaded.resolve_job_def("backup"), {"ops": {"dump": {"config": {"tpye": "daily"}}}})
    assert dg.validate_run_config(loaded.resolve_job_def("backup"), {"ops": {"dump": {"config": {"target": "x"}}}})


def test_cli_runs_carry_the_partition_of_a_configured_target_only():
    assert run_tags("shop", ("crm-db", "shop")) == {TARGET_TAG: "shop", PARTITION_TAG: "shop"}
    assert run_tags("adhoc", ("crm-db", "shop")) == {TARGET_TAG: "adhoc"}  # ad-hoc target: config names it
    assert run_tags(None, ("shop",)) == {}


def test_a_config_target_other_than_the_partition_is_refused_before_anything_runs(configure, dagster_instance):
    configure(TARGETS, {"SHOP_URL": "postgresql://u@127.0.0.1:9/shop", "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    result = defs().resolve_job_def("backup").execute_in_process(
        partition_key="shop", run_config={"ops": {"dump": {"config": {"target": "crm-db"}}}},
        instance=dagster_instance, raise_on_error=False)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "says target 'crm-db' but the run is partition 'shop'" in message and "\n" not in message


def test_backup_freshness_is_a_policy_and_drill_checks_block(configure):
    configure(TARGETS, {"SHOP_URL": "postgresql://u@127.0.0.1:9/shop", "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    loaded = defs()
    [spec] = [s for s in loaded.resolve_all_asset_specs() if s.key == dg.AssetKey(["backups", "shop"])]
    assert spec.freshness_policy == dg.FreshnessPolicy.time_window(fail_window=BACKUP_MAX_AGE)
    assert BACKUP_MAX_AGE == timedelta(hours=26)
    checks = {spec.name: spec for spec in loaded.get_asset_checks_def(
        dg.AssetCheckKey(dg.AssetKey(["backups", "shop"]), "restorable")).check_specs}
    assert "backup_fresh" not in checks and "drill_fresh" in checks
    assert all(checks[name].blocking for name in ("restorable", "row_counts_match", "assertions_pass"))
    assert "check_backups" not in {job.name for job in loaded.resolve_all_job_defs()}


def _events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


@pytest.mark.slow  # a real backup with its drill, then the weekly drill of it
def test_partitioned_backup_materializes_after_its_drill_and_the_drill_job_chains_the_same_ops(
    configure, backup_env, source_dsn, dagster_instance
):
    configure(TARGETS, {"SHOP_URL": source_dsn, "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    loaded = defs()
    result = loaded.resolve_job_def("backup").execute_in_process(
        partition_key="shop", instance=dagster_instance, raise_on_error=False)
    assert result.success
    run = dagster_instance.get_run_by_id(result.run_id)
    assert (run.tags[TARGET_TAG], run.tags[PARTITION_TAG]) == ("shop", "shop")
    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert (record.type, record.verification_status) == ("manual", "verified")

    [materialized] = _events(result, "ASSET_MATERIALIZATION")
    assert materialized.step_key == "verify"
    steps_before = [e.step_key for e in result.all_events[: result.all_events.index(materialized)]]
    assert "restore_drill" in steps_before
    meta = materialized.event_specific_data.materialization.metadata
    assert meta["verification_status"].value == "verified" and meta["backup_id"].value == record.id
    assert meta["kpi_verified_share_30d"].value == 100.0  # percent
    assert {r.data["table"]: r.data["rows"] for r in meta["row_counts"].value.records} == record.row_counts

    drill = loaded.resolve_job_def("drill").execute_in_process(
        partition_key="shop", instance=dagster_instance, raise_on_error=False)
    assert drill.success
    assert dagster_instance.get_run_by_id(drill.run_id).tags[TARGET_TAG] == "shop"
    succeeded = [e.step_key for e in _events(drill, "STEP_SUCCESS")]
    assert succeeded == ["pick_backup", "restore_drill", "verify"]
    assert {e.check_name: e.passed for e in drill.get_asset_check_evaluations()} == dict.fromkeys(
        ["restorable", "row_counts_match", "assertions_pass"], True)
    assert not _events(drill, "ASSET_MATERIALIZATION")  # an older backup drilled again is observed, not made
    [observed] = _events(drill, "ASSET_OBSERVATION")
    assert observed.event_specific_data.asset_observation.metadata["backup_id"].value == record.id
    assert backup_env.history().get(record.id).drilled_at > record.drilled_at
