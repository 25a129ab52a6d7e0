"""`backups/<target>` as a graph-backed asset: Materialize (Dagster's __ASSET_JOB) and the schedule's asset job.

Both run the backup chain for real and must record the same facts as the
`backup` job: one history row, verified after the drill, one materialization
with the verdict (the graph's output), then the asset's checks; the run queue tags an
asset-page run with its target and refuses one that backs up several targets.
"""

import dagster as dg
import psycopg
import pytest

from backup_pipeline.definitions import defs
from backup_pipeline.defs.alerts.failed_run import failed_run_alert
from backup_pipeline.defs.backup.assets import asset_job_name, node_name
from backup_pipeline.resources import TARGET_TAG
from dagster._core.run_coordinator import SubmitRunContext

from backup_pipeline.run_queue import TargetQueuedRunCoordinator, backed_up_targets
from backup_pipeline.runs import _remote_origin
from backup_pipeline_tests.fix_pg import new_database

SHOP = dg.AssetKey(["backups", "shop"])
CRM = dg.AssetKey(["backups", "crm-db"])
TARGETS = {"shop": {"dsn_env": "SHOP_URL"}, "crm-db": {"dsn_env": "CRM_URL", "schedule": None}}
QUEUE = {"run_coordinator": {"module": "backup_pipeline.run_queue", "class": "TargetQueuedRunCoordinator"}}


def _materializations(result) -> list:
    return [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]


@pytest.mark.slow  # two real backups with their drills
def test_materialize_and_the_scheduled_asset_job_run_the_whole_backup_chain(
    configure, backup_env, source_dsn, dagster_instance
):
    configure(TARGETS, {"SHOP_URL": source_dsn, "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    loaded = defs()
    assert loaded.resolve_schedule_def("daily_backup_shop").job_name == asset_job_name("shop") == "backup_shop"

    # What the asset page's Materialize launches: the implicit asset job, no config at all.
    result = loaded.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[SHOP], instance=dagster_instance, raise_on_error=False)
    assert result.success
    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert (record.type, record.status, record.verification_status) == ("manual", "completed", "verified")
    [materialized] = _materializations(result)  # the graph's output, after the verdict
    assert materialized.step_key == f"{node_name('shop')}.sync_standby"
    assert not [e for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]  # the checks ran after it
    assert {e.check_name for e in result.get_asset_check_evaluations() if e.passed} >= {"restorable", "drill_fresh"}
    meta = materialized.event_specific_data.materialization.metadata
    assert meta["verification_status"].value == "verified" and meta["backup_id"].value == record.id
    assert dagster_instance.get_latest_materialization_event(SHOP).run_id == result.run_id

    # The daily schedule's run: the target's asset job, tagged with the target, type daily.
    schedule = loaded.resolve_schedule_def("daily_backup_shop")
    with dg.build_schedule_context(instance=dagster_instance) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    daily = loaded.resolve_job_def("backup_shop").execute_in_process(
        run_config=request.run_config, instance=dagster_instance, raise_on_error=False)
    assert daily.success
    assert dagster_instance.get_run_by_id(daily.run_id).tags[TARGET_TAG] == "shop"
    row = backup_env.history().find_by_run(daily.run_id, "shop")
    assert (row.type, row.verification_status) == ("daily", "verified")
    assert len(_materializations(daily)) == 1


def test_every_asset_job_and_the_asset_page_launch_open_valid_with_no_config(configure):
    configure(TARGETS, {"SHOP_URL": "postgresql://u@127.0.0.1:9/shop", "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    loaded = defs()
    assert {s.job_name for s in loaded.get_repository_def().schedule_defs if s.name.startswith("daily_backup_")} == {"backup_shop"}
    for job in (loaded.resolve_job_def("backup_shop"), loaded.resolve_job_def("backup_crm_db"),
                loaded.resolve_implicit_global_asset_job_def()):
        assert dg.validate_run_config(job, {}), job.name  # nothing required: the graph binds the target
    with pytest.raises(dg.DagsterInvalidConfigError):  # the type is checked like the CLI's --type
        dg.validate_run_config(loaded.resolve_job_def("backup_shop"),
                               {"ops": {node_name("shop"): {"config": {"type": "hourly"}}}})


def test_a_failed_asset_run_drill_step_alerts_as_a_verification_failure(configure, dagster_instance):
    configure(TARGETS, {"SHOP_URL": "postgresql://u@127.0.0.1:9/shop", "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    result = defs().resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[SHOP], instance=dagster_instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == f"{node_name('shop')}.dump"
    run = dagster_instance.get_run_by_id(result.run_id)
    alert = failed_run_alert(run, failure, [failure])
    assert (alert.kind, alert.step) == ("run_failed", "backups__shop.dump")
    verify_failed = failure._replace(step_key=f"{node_name('shop')}.verify")
    assert failed_run_alert(run, failure, [verify_failed]).kind == "verification_failed"


def test_the_run_queue_tags_an_asset_page_run_with_its_target_and_refuses_several_targets(configure):
    configure(TARGETS, {"SHOP_URL": "postgresql://u@127.0.0.1:9/shop", "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    assert backed_up_targets(frozenset({SHOP, dg.AssetKey(["other"])})) == ["shop"]
    loaded = defs()
    job = loaded.resolve_implicit_global_asset_job_def()
    origin = _remote_origin(job.name, loaded.get_repository_def().name)
    with dg.instance_for_test(overrides=QUEUE) as instance:
        assert isinstance(instance.run_coordinator, TargetQueuedRunCoordinator)
        one = instance.create_run_for_job(job_def=job, asset_selection=frozenset({SHOP}),
                                         remote_job_origin=origin)
        instance.run_coordinator.submit_run(SubmitRunContext(one, workspace=None))  # as the webserver's launch does
        queued = instance.get_run_by_id(one.run_id)
        assert (queued.status, queued.tags[TARGET_TAG]) == (dg.DagsterRunStatus.QUEUED, "shop")

        both = instance.create_run_for_job(job_def=job, asset_selection=frozenset({SHOP, CRM}),
                                          remote_job_origin=origin)
        instance.run_coordinator.submit_run(SubmitRunContext(both, workspace=None))
        refused = instance.get_run_by_id(both.run_id)
        assert refused.status == dg.DagsterRunStatus.FAILURE and TARGET_TAG not in refused.tags
        [event] = instance.all_logs(both.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "materialize one backups/<target> asset per run" in event.message


@pytest.mark.slow  # two real backups, one refreshing a real standby
def test_an_asset_run_refreshes_the_standby_and_a_standby_failure_comes_after_the_report(
    configure, backup_env, source_dsn, pg_server, dagster_instance
):
    standby = new_database(pg_server.dsn())
    configure({"shop": {"dsn_env": "SHOP_URL", "standby_dsn_env": "STANDBY_URL"}},
              {"SHOP_URL": source_dsn, "STANDBY_URL": standby})
    result = defs().resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[SHOP], instance=dagster_instance, raise_on_error=False)
    assert result.success
    assert backup_env.history().find_by_run(result.run_id, "shop").standby_status == "synced"
    with psycopg.connect(standby) as conn:
        assert conn.execute("SELECT count(*) FROM public.products").fetchone()[0] == 500

    configure({"shop": {"dsn_env": "SHOP_URL", "standby_dsn_env": "STANDBY_URL"}},
              {"SHOP_URL": source_dsn, "STANDBY_URL": "postgresql://u@127.0.0.1:9/standby"})
    failed = defs().resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[SHOP], instance=dagster_instance, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    assert failure.step_key == f"{node_name('shop')}.sync_standby"
    row = backup_env.history().find_by_run(failed.run_id, "shop")
    assert (row.verification_status, row.standby_status) == ("verified", "failed")
    [materialized] = _materializations(failed)  # the good backup is reported though the standby step failed
    assert materialized.event_specific_data.materialization.metadata["backup_id"].value == row.id


@pytest.mark.slow  # real backups whose drills fail an assertion
@pytest.mark.parametrize("shape", ["backup job", "asset run"])
def test_a_failed_drill_reports_its_failed_checks_and_verdict_though_the_step_fails(
    shape, configure, backup_env, source_dsn, dagster_instance, tmp_path
):
    # Events logged with context.log_event are dropped when the op raises: the verdict must be yielded.
    (tmp_path / "asserts.sql").write_text("-- name: a million customers\nSELECT count(*) > 1000000 AS ok FROM public.customers;\n")
    configure({"shop": {"dsn_env": "SHOP_URL", "assertions": ["asserts.sql"]}}, {"SHOP_URL": source_dsn})
    loaded = defs()
    if shape == "backup job":
        result = loaded.resolve_job_def("backup").execute_in_process(
            partition_key="shop", instance=dagster_instance, raise_on_error=False)
    else:
        result = loaded.resolve_implicit_global_asset_job_def().execute_in_process(
            asset_selection=[SHOP], instance=dagster_instance, raise_on_error=False)
    assert not result.success
    row = backup_env.history().find_by_run(result.run_id, "shop")
    assert row.verification_status == "failed"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert (checks["restorable"], checks["assertions_pass"]) == (True, False)
    [materialized] = _materializations(result)
    meta = materialized.event_specific_data.materialization.metadata
    assert (meta["backup_id"].value, meta["verification_status"].value) == (row.id, "failed")
    latest = dagster_instance.get_latest_materialization_event(SHOP)
    assert latest.run_id == result.run_id  # the asset page shows this failed backup, not the last good one
