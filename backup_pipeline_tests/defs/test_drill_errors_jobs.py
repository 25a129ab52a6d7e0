"""A drill that could not run, through Dagster: retried, recorded beside an unchanged verdict, alerted, kept.

Faults are real: a TCP proxy in front of the moto S3 server cuts the drill's
download; the drill stage is a tmpfs with no inode left for the dump.
"""

import subprocess

import pytest

from backup_pipeline.cli import main
from backup_pipeline.core.storage import open_storage
from backup_pipeline.defs.backup.jobs import backup_job_for
from backup_pipeline.defs.drill.jobs import drill_job_for
from backup_pipeline.defs.drill.report import DRILL_CHECKS
from backup_pipeline.launch import run_drill, run_retention
from backup_pipeline.resources import TARGET_TAG, BackupSettings
from backup_pipeline_tests.defs.test_alert_sensors import evaluate_failure_sensor
from backup_pipeline_tests.defs.test_retention import PAST

FAST_RETRIES = {"drill_retries": 2, "drill_retry_seconds": 0.1}


def _run(job, run_config: dict, instance, target: str = "shop"):
    return job.execute_in_process(run_config=run_config, instance=instance, tags={TARGET_TAG: target},
                                  resources={"backup_settings": BackupSettings()}, raise_on_error=False)


def _failure(result) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.user_failure_data.description


@pytest.mark.slow  # a real backup, three drill attempts
def test_a_cut_drill_download_keeps_the_verdict_alerts_and_retention_keeps_the_backup(
    configure, s3_env, s3_server, s3_bucket, source_dsn, proxy_to, alert_env, dagster_instance, monkeypatch, tmp_path
):
    proxy = proxy_to(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    configure({"shop": {"dsn_env": "SHOP_URL", "storage": f"s3://{s3_bucket}/b"}}, {"SHOP_URL": source_dsn})
    proxy.cut_when(rb"(GET|HEAD) \S*\.dump\.zst")  # the upload PUTs; the drill's download is the first read

    result = _run(backup_job_for(()), {"ops": {"dump": {"config": {"target": "shop"}},
                                       "restore_drill": {"config": FAST_RETRIES}}}, dagster_instance)

    assert not result.success and proxy.cuts == 1
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["restore_drill", "restore_drill"]
    assert not [e for e in result.get_asset_check_evaluations() if e.check_name in DRILL_CHECKS]  # no "not restorable"
    history = s3_env.history()
    row = history.find_by_run(result.run_id, "shop")
    assert (row.status, row.verification_status, row.drilled_at) == ("completed", "pending", None)
    assert "cannot reach endpoint" in row.drill_error and row.drill_error_at is not None
    message = _failure(result)
    assert "the backup itself is completed and its verdict (pending) is unchanged" in message and "\n" not in message
    assert not [p for p in (tmp_path / "stage").rglob("*") if p.is_file() and ".locks" not in p.parts]  # run locks

    assert evaluate_failure_sensor(dagster_instance, result) is None
    [webhook] = alert_env.webhook_bodies()
    assert (webhook["kind"], webhook["target"], webhook["backup_id"]) == ("drill_error", "shop", row.id)
    assert webhook["title"].startswith("Backup drill could not run: target shop")
    assert "cannot reach endpoint" in webhook["error"]
    assert "the backup's verdict is unchanged; the drill will be retried" in webhook["text"]

    proxy.restore()
    history.set_retention(row.id, PAST)
    outcome = run_retention(dry_run=False)
    assert outcome.success, outcome.error
    [kept] = [k for k in outcome.output["kept"] if k["backup_id"] == row.id]
    assert "its drill could not run" in kept["why"]
    assert history.get(row.id).status == "completed"
    assert open_storage(f"s3://{s3_bucket}/b").exists(row.archive_uri.split("/b/", 1)[1])


@pytest.mark.slow  # a real backup and drill
def test_a_weekly_drill_on_a_full_stage_records_a_drill_error_and_keeps_verified(
    configure, backup_env, source_dsn, dagster_instance, monkeypatch, tmp_path
):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    from backup_pipeline.launch import run_backup

    outcome, record = run_backup("shop")
    assert outcome.success, outcome.error
    stage = tmp_path / "tiny-stage"
    stage.mkdir()
    # Room for the run's lock and folders but no inode for the dump: a stage too small for the dump
    # streams it instead (core/test_drill_errors.py), so the disk has to fill for real.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=5", "tmpfs", str(stage)], check=True)
    try:
        monkeypatch.setenv("BACKUP_STAGE_DIR", str(stage))
        result = _run(drill_job_for(()), {"ops": {"pick_backup": {"config": {"backup_id": record.id}},
                                          "restore_drill": {"config": FAST_RETRIES}}},
                      dagster_instance)
        assert not result.success
        assert [p for p in stage.rglob("*") if p.is_file() and ".locks" not in p.parts] == []
    finally:
        subprocess.run(["umount", "-l", str(stage)], check=False)
    message = _failure(result)
    assert f"no space for the drill in stage {stage}/" in message and "BACKUP_STAGE_DIR" in message
    assert "verdict (verified) is unchanged" in message
    row = backup_env.history().get(record.id)
    assert row.verification_status == "verified" and "no space for the drill" in row.drill_error
    assert row.drilled_at == record.drilled_at  # the earlier, passing drill still stands


def test_drilling_an_interrupted_backup_says_so_in_one_line(configure, backup_env, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": "postgresql://127.0.0.1:9/none"})
    running = backup_env.history().start(target="shop", type="daily")  # the backup was killed mid-dump
    expected = f"backup {running.id} is running and has no manifest: nothing to drill"
    assert main(["drill", "--backup-id", running.id]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and expected in err
    outcome = run_drill(backup_id=running.id)  # the same through the job, as the UI would launch it
    assert not outcome.success and expected in outcome.error
