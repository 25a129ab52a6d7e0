"""Runs that die mid-way and storage that blips: history stays truthful, nothing is dumped twice."""

import boto3
import dagster as dg
import pytest
from moto.server import ThreadedMotoServer

from backup_pipeline.core.ephemeral import free_port
from backup_pipeline.definitions import defs
from backup_pipeline.defs.backup.ops import BackupConfig, dump, upload
from backup_pipeline.resources import TARGET_TAG, BackupSettings
from backup_pipeline_tests.fix_dagster import SOURCE_DSN_ENV
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY


def test_failure_sensor_closes_a_row_left_running_by_a_dead_run(backup_env, dagster_instance):
    job = defs().resolve_job_def("backup")
    result = job.execute_in_process(
        run_config={"ops": {"dump": {"config": {"target": "shop", "dsn_env": "UNSET_VAR_FOR_TEST"}}}},
        instance=dagster_instance, tags={TARGET_TAG: "shop"}, raise_on_error=False,
    )
    assert not result.success
    history = backup_env.history()
    ghost = history.find_by_run(result.run_id, "shop")
    assert ghost.status == "failed"  # the op recorded its own failure
    # A worker killed before it could record anything leaves `running` behind; model that row.
    # Model a run killed before it recorded anything: a second attempt row of that run left `running`.
    ghost2 = history.start(target="shop-ghost", type="daily", dagster_run_id=result.run_id)
    run = dagster_instance.get_run_by_id(result.run_id)
    run = run.with_tags({**run.tags, TARGET_TAG: "shop-ghost"})
    failure_event = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="backup_run_failure_recorder", dagster_event=failure_event,
        dagster_instance=dagster_instance, dagster_run=run, resources={"backup_settings": BackupSettings()},
    ).for_run_failure()
    defs().resolve_sensor_def("backup_run_failure_recorder")(context)
    closed = history.get(ghost2.id)
    assert closed.status == "failed" and "the run ended before the backup finished" in closed.error


def test_transient_storage_outage_asks_dagster_to_retry_the_upload_only(backup_env, source_dsn, monkeypatch):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for var, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                       "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_REGION": "us-east-1",
                       SOURCE_DSN_ENV: source_dsn}.items():
        monkeypatch.setenv(var, value)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY_ID,
                          aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")
    client.create_bucket(Bucket="blip")
    settings = BackupSettings()
    try:
        staged = dump(dg.build_op_context(), config=BackupConfig(target="shop", dsn_env=SOURCE_DSN_ENV,
                                                                 storage_url="s3://blip/b"), backup_settings=settings)
        server.stop()  # the endpoint goes away: connection refused
        with pytest.raises(dg.RetryRequested):
            upload(dg.build_op_context(), staged=staged, backup_settings=settings)
        assert backup_env.history().get(staged.backup_id).status == "running"

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # back; moto keeps its buckets in-process
        upload(dg.build_op_context(), staged=staged, backup_settings=settings)
        upload(dg.build_op_context(), staged=staged, backup_settings=settings)  # a repeated attempt is harmless
    finally:
        server.stop()
    rows = backup_env.history().list(target="shop")
    assert [(r.id, r.status) for r in rows] == [(staged.backup_id, "completed")]
