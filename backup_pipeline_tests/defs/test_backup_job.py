"""The backup job end to end through Dagster, on real PostgreSQL and a real S3 endpoint."""

import json

import boto3
import sqlalchemy as sa
import dagster as dg
import pytest

from backup_pipeline.core.backup import split_backup_uri
from backup_pipeline.core.storage import open_storage
from backup_pipeline.definitions import defs
from backup_pipeline.defs.backup.ops import BackupConfig, dump, upload
from backup_pipeline.resources import BackupSettings
from backup_pipeline_tests.fix_dagster import SOURCE_DSN_ENV
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY


def run_backup(instance, **config) -> dg.ExecuteInProcessResult:
    config.setdefault("target", "shop")
    config.setdefault("dsn_env", SOURCE_DSN_ENV)
    job = defs().resolve_job_def("backup")
    return job.execute_in_process(
        run_config={"ops": {"dump": {"config": config}}}, instance=instance, raise_on_error=False
    )


def all_event_text(instance, run_id: str) -> str:
    records = instance.all_logs(run_id)
    return "\n".join(repr(r) for r in records)


def materializations(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    return [e.event_specific_data.materialization for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]


def test_backup_to_local_storage_records_history_and_matching_asset_metadata(
    backup_env, dagster_instance, source_dsn, monkeypatch
):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    result = run_backup(dagster_instance, storage_url=backup_env.local_storage_url, type="pre-migration")
    assert result.success

    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert (record.status, record.verification_status, record.type) == ("completed", "verified", "pre-migration")
    assert record.row_counts["public.customers"] == 5000
    assert (record.retention_until - record.timestamp).days == 30

    [mat] = materializations(result)
    assert mat.asset_key == dg.AssetKey(["backups", "shop"])
    meta = mat.metadata
    assert meta["backup_id"].value == record.id
    assert meta["sha256"].value == record.sha256
    assert meta["size_bytes"].value == record.size_bytes
    assert meta["archive_uri"].value == record.archive_uri
    assert {r.data["table"]: r.data["rows"] for r in meta["row_counts"].value.records} == record.row_counts

    base, key = split_backup_uri(record.manifest_uri)
    storage = open_storage(base)
    manifest = json.loads(storage.get_bytes(key))
    assert manifest["backup_id"] == record.id and manifest["dagster_run_id"] == result.run_id
    assert manifest["archive"]["sha256"] == record.sha256
    assert manifest["row_counts"] == record.row_counts
    assert manifest["server_version"] == record.server_version
    assert sorted(storage.list_keys("shop/")) == sorted(
        [key, manifest["archive"]["key"], manifest["globals"]["key"]]
    )
    assert not any(backup_env.stage_dir.rglob("*.dump*")), "staged archive left behind"
    assert SOURCE_PASSWORD not in all_event_text(dagster_instance, result.run_id)


def test_backup_to_s3_endpoint(s3_env, dagster_instance, source_dsn, s3_bucket, s3_server, monkeypatch):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    result = run_backup(dagster_instance, storage_url=f"s3://{s3_bucket}/revo")
    assert result.success
    record = s3_env.history().find_by_run(result.run_id, "shop")
    assert record.archive_uri.startswith(f"s3://{s3_bucket}/revo/shop/")
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=ACCESS_KEY_ID,
                          aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert [k.rsplit(".", 2)[-2:] for k in keys] == [["dump", "zst"], ["manifest", "json"], ["roles", "sql"]]
    assert all(k.startswith("revo/shop/") for k in keys)


def test_wrong_password_is_recorded_as_failed_without_the_password(backup_env, dagster_instance, source_dsn, monkeypatch):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn.replace(SOURCE_PASSWORD, "Bad-" + SOURCE_PASSWORD))
    result = run_backup(dagster_instance, storage_url=backup_env.local_storage_url)
    assert not result.success
    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert record.status == "failed" and "password authentication failed" in record.error
    assert SOURCE_PASSWORD not in record.error
    assert SOURCE_PASSWORD not in all_event_text(dagster_instance, result.run_id)
    assert not list(open_storage(backup_env.local_storage_url).list_keys())


def test_missing_bucket_fails_before_dumping_and_names_the_bucket(s3_env, dagster_instance, source_dsn, monkeypatch):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    result = run_backup(dagster_instance, storage_url="s3://no-such-bucket-xyz/backups")
    assert not result.success
    record = s3_env.history().find_by_run(result.run_id, "shop")
    assert record.status == "failed" and "no-such-bucket-xyz" in record.error
    assert record.archive_uri is None


def test_bad_s3_credentials_fail_clearly_without_the_secret(
    s3_env, dagster_instance, source_dsn, s3_bucket, s3_auth_enforced, monkeypatch
):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    result = run_backup(dagster_instance, storage_url=f"s3://{s3_bucket}/x")
    assert not result.success
    record = s3_env.history().find_by_run(result.run_id, "shop")
    assert record.status == "failed" and "credentials" in record.error
    text = all_event_text(dagster_instance, result.run_id) + record.error
    assert SECRET_ACCESS_KEY not in text and SOURCE_PASSWORD not in text


@pytest.mark.parametrize("name", ["../etc", "a/b", "prod..x/"])
def test_unsafe_target_names_are_refused_before_any_work(backup_env, dagster_instance, source_dsn, monkeypatch, name):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    result = run_backup(dagster_instance, target=name, storage_url=backup_env.local_storage_url)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "is not allowed" in failure.step_failure_data.user_failure_data.description
    assert backup_env.history().list() == []


def test_upload_failing_after_the_dump_leaves_no_manifest_and_a_failed_row(
    s3_env, source_dsn, s3_server, monkeypatch
):
    """The bucket vanishes between dump and upload: nothing may look like a complete backup."""
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=ACCESS_KEY_ID,
                          aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")
    client.create_bucket(Bucket="vanishing")
    settings = BackupSettings()
    config = BackupConfig(target="shop", dsn_env=SOURCE_DSN_ENV, storage_url="s3://vanishing/b")
    staged = dump(dg.build_op_context(), config=config, backup_settings=settings)
    client.delete_object(Bucket="vanishing", Key=f"b/{staged.names.archive}")  # streamed in during the dump
    client.delete_bucket(Bucket="vanishing")

    with pytest.raises(dg.Failure, match="vanishing"):
        upload(dg.build_op_context(), staged=staged, backup_settings=settings)
    record = s3_env.history().get(staged.backup_id)
    assert record.status == "failed" and record.manifest_uri is None


def test_definitions_declare_an_asset_and_a_daily_schedule_per_target(backup_env, monkeypatch, tmp_path):
    (tmp_path / "targets.yaml").write_text(
        "storage: s3://bucket/prefix\ntargets:\n  prod:\n    dsn_env: PROD_SUPABASE_DB_URL\n"
        "  analytics:\n    dsn_env: ANALYTICS_URL\n    storage: file:///var/backups\n"
    )
    monkeypatch.setenv("BACKUP_TARGETS_FILE", str(tmp_path / "targets.yaml"))
    loaded = defs()
    keys = {spec.key for spec in loaded.assets}
    assert keys == {dg.AssetKey(["backups", "prod"]), dg.AssetKey(["backups", "analytics"])}
    schedule = loaded.resolve_schedule_def("daily_backup_prod")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    with dg.build_schedule_context(repository_def=loaded.get_repository_def(),
                                   scheduled_execution_time=__import__("datetime").datetime(2026, 11, 25, 2, 0)) as ctx:
        [request] = schedule.evaluate_tick(ctx).run_requests
    assert schedule.job_name == "backup_prod"  # the asset's job: the schedule is its automation
    assert request.run_config == {"ops": {"backups__prod": {"config": {"type": "daily"}}}}
    assert loaded.resolve_job_def("backup_prod").tags["backup_pipeline/target"] == "prod"


def test_history_in_postgresql_mirrors_the_run(backup_env, dagster_instance, source_dsn, pg_history_url, monkeypatch):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    monkeypatch.setenv("BACKUP_HISTORY_URL", pg_history_url)
    result = run_backup(dagster_instance, storage_url=backup_env.local_storage_url, type="daily")
    assert result.success
    with sa.create_engine(pg_history_url).connect() as conn:
        row = conn.execute(sa.text(
            "SELECT r.type, r.status, r.verification_status, r.size_mb, h.dagster_run_id FROM public.recent_backups r "
            "JOIN public.backup_history h USING (id) WHERE r.timestamp > NOW() - INTERVAL '7 days'"
        )).one()
    assert row[:3] == ("daily", "completed", "verified") and row.dagster_run_id == result.run_id
