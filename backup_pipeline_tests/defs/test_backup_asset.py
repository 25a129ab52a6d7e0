"""`backups/<target>` as a graph-backed asset: Materialize (Dagster's __ASSET_JOB) and the schedule's asset job.

Both run the backup chain for real and must record the same facts as the
`backup` job: one history row, verified after the drill, one materialization
with the verdict (the graph's output), then the asset's checks; the run queue tags an
asset-page run with its target and refuses one that backs up several targets.
"""

import dagster as dg
import pytest

from backup_pipeline.definitions import defs
from backup_pipeline.defs.alerts.failed_run import failed_run_alert
from backup_pipeline.defs.backup.assets import asset_job_name, node_name
from backup_pipeline.resources import TARGET_TAG
from dagster._core.run_coordinator import SubmitRunContext

from backup_pipeline.run_queue import TargetQueuedRunCoordinator, backed_up_targets
from backup_pipeline.runs import _remote_origin

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
