"""The alert sensors end to end: real failed runs and real history, delivered to local HTTP and SMTP sinks."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from backup_pipeline.definitions import defs
from backup_pipeline.defs.alerts.sensors import alert_on_run_failure, stale_backup_sensor
from backup_pipeline.resources import TARGET_TAG, BackupSettings
from backup_pipeline_tests.fix_dagster import SOURCE_DSN_ENV
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD

WRONG_PASSWORD = "Wr0ng-Pa55word-4-alerts"


def evaluate_failure_sensor(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult):
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=instance.get_run_by_id(result.run_id),
        resources={"backup_settings": BackupSettings()},
    ).for_run_failure()
    return alert_on_run_failure(context)


def delivered(alert_env) -> list[str]:
    """Every payload as it went over the wire, plus the decoded mail bodies."""
    mails = alert_env.smtp.mails
    return [post.raw for post in alert_env.http.posts] + [m.raw for m in mails] + [m.message.get_content() for m in mails]


def test_a_failed_backup_alerts_every_channel_without_the_password(
    backup_env, alert_env, pg_server, dagster_instance, monkeypatch
):
    monkeypatch.setenv(SOURCE_DSN_ENV, f"postgresql://postgres:{WRONG_PASSWORD}@127.0.0.1:{pg_server.port}/postgres")
    result = defs().resolve_job_def("backup").execute_in_process(
        run_config={"ops": {"dump": {"config": {"target": "shop", "dsn_env": SOURCE_DSN_ENV,
                                                "storage_url": backup_env.local_storage_url}}}},
        instance=dagster_instance, tags={TARGET_TAG: "shop"}, raise_on_error=False,
    )
    assert not result.success
    assert evaluate_failure_sensor(dagster_instance, result) is None

    [webhook] = alert_env.webhook_bodies()
    [slack] = alert_env.slack_bodies()
    [mail] = alert_env.smtp.mails
    run_url = f"http://dagster.example:3000/runs/{result.run_id}"
    backup_id = backup_env.history().find_by_run(result.run_id, "shop").id
    assert (webhook["kind"], webhook["target"], webhook["job"], webhook["step"]) == ("run_failed", "shop", "backup", "dump")
    assert webhook["run_url"] == run_url and webhook["backup_id"] == backup_id
    assert "password authentication failed" in webhook["error"]
    assert "target shop, job backup, step dump" in slack["text"] and f"<{run_url}|" in slack["text"]
    assert mail.subject == "Backup pipeline run failed: target shop, job backup, step dump"
    assert mail.recipients == ["ops@example.com", "dba@example.com"]
    body = mail.message.get_content()
    assert f"Run: {run_url}" in body and "password authentication failed" in body
    for payload in delivered(alert_env):
        assert WRONG_PASSWORD not in payload and SOURCE_PASSWORD not in payload


@dg.op
def leaky_connect() -> None:
    raise RuntimeError(f"could not connect with postgresql://shop:{WRONG_PASSWORD}@db:5432/shop; "
                       f"the server said the password {WRONG_PASSWORD} is wrong")


@dg.job
def leaky_job() -> None:
    leaky_connect()


def test_a_dsn_password_quoted_in_an_error_is_masked_everywhere(backup_env, alert_env, dagster_instance, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://shop:{WRONG_PASSWORD}@db:5432/shop")  # the configured target
    monkeypatch.setenv("BACKUP_TARGET", "shop")
    result = leaky_job.execute_in_process(instance=dagster_instance, tags={TARGET_TAG: "shop"}, raise_on_error=False)
    evaluate_failure_sensor(dagster_instance, result)

    [webhook] = alert_env.webhook_bodies()
    assert (webhook["job"], webhook["step"]) == ("leaky_job", "leaky_connect")
    assert webhook["error"] == ("RuntimeError: could not connect with postgresql://shop:***@db:5432/shop; "
                                "the server said the password *** is wrong")
    payloads = delivered(alert_env)
    assert len(payloads) == 4
    for payload in payloads:
        assert WRONG_PASSWORD not in payload and "xoxSlackHookToken42" not in payload


@dg.op
def verify() -> None:
    raise dg.Failure(description="backup shop-1 failed its drill: row counts differ for public.orders",
                     allow_retries=False)


@dg.job
def verifying_job() -> None:
    verify()


def test_a_failed_verification_is_a_verification_alert(backup_env, alert_env, dagster_instance):
    result = verifying_job.execute_in_process(instance=dagster_instance, tags={TARGET_TAG: "shop"}, raise_on_error=False)
    evaluate_failure_sensor(dagster_instance, result)
    [webhook] = alert_env.webhook_bodies()
    assert (webhook["kind"], webhook["step"]) == ("verification_failed", "verify")
    assert webhook["error"] == "backup shop-1 failed its drill: row counts differ for public.orders"
    assert alert_env.smtp.mails[0].subject.startswith("Backup verification failed: target shop")


def test_without_channels_the_failure_sensor_skips(backup_env, no_alert_env, dagster_instance):
    result = verifying_job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    skip = evaluate_failure_sensor(dagster_instance, result)
    assert isinstance(skip, dg.SkipReason) and "No alert channel configured" in skip.skip_message


def test_when_no_channel_takes_the_alert_the_sensor_fails_loudly(backup_env, alert_env, dagster_instance, monkeypatch):
    alert_env.http.fail("/hooks/backup-alerts")
    alert_env.http.fail("/services/T0SINK/B0SINK/xoxSlackHookToken42")
    monkeypatch.setenv("BACKUP_ALERT_SMTP_STARTTLS", "true")  # the sink speaks no TLS
    result = verifying_job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    with pytest.raises(Exception, match="no alert channel accepted the alert") as info:
        evaluate_failure_sensor(dagster_instance, result)
    assert "xoxSlackHookToken42" not in str(info.value)


def complete(history, target: str, finished_at: datetime) -> None:
    record = history.start(target=target, type="daily", started_at=finished_at - timedelta(minutes=5))
    history.complete(record.id, archive_uri=f"file:///x/{record.id}", globals_uri=None, manifest_uri=None, size_bytes=1,
                     sha256="0" * 64, row_counts={}, duration_seconds=1.0, server_version=None, pg_dump_version=None,
                     compression="zstd", finished_at=finished_at)


def stale_context(cursor: str | None) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(cursor=cursor, resources={"backup_settings": BackupSettings()})


def test_a_stale_target_alerts_once_a_day(backup_env, alert_env, tmp_path):
    (tmp_path / "backup_targets.yaml").write_text(
        f"storage: {backup_env.local_storage_url}\ntargets:\n  shop: {{dsn_env: SHOP_URL}}\n  blog: {{dsn_env: BLOG_URL}}\n")
    now = datetime.now(UTC)
    complete(backup_env.history(), "blog", now - timedelta(hours=2))
    complete(backup_env.history(), "shop", now - timedelta(hours=30))

    first = stale_context(None)
    assert "Alerted for stale targets: shop" in stale_backup_sensor(first).skip_message
    today = now.date().isoformat()
    assert json.loads(first.cursor) == {"shop": today}
    [webhook] = alert_env.webhook_bodies()
    assert (webhook["kind"], webhook["target"]) == ("stale_target", "shop")
    assert "30.0 hours ago" in webhook["error"]
    assert len(alert_env.slack_bodies()) == 1 and len(alert_env.smtp.mails) == 1

    second = stale_context(first.cursor)  # the next tick, same day
    assert "Already alerted today for shop" in stale_backup_sensor(second).skip_message
    assert len(alert_env.webhook_bodies()) == 1

    yesterday = (now - timedelta(days=1)).date().isoformat()
    next_day = stale_context(json.dumps({"shop": yesterday}))  # what the cursor says once the date has turned
    stale_backup_sensor(next_day)
    assert len(alert_env.webhook_bodies()) == 2 and json.loads(next_day.cursor) == {"shop": today}


def test_an_undelivered_stale_alert_is_retried_next_tick(backup_env, alert_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/db")
    monkeypatch.setenv("BACKUP_TARGET", "shop")
    monkeypatch.delenv("BACKUP_ALERT_WEBHOOK_URL")
    monkeypatch.delenv("BACKUP_ALERT_SMTP_HOST")
    alert_env.http.fail("/services/T0SINK/B0SINK/xoxSlackHookToken42")
    context = stale_context(None)
    assert "retrying next tick" in stale_backup_sensor(context).skip_message
    assert json.loads(context.cursor) == {}
    assert len(alert_env.slack_bodies()) == 1


def test_without_channels_the_stale_sensor_skips(backup_env, no_alert_env):
    assert "No alert channel configured" in stale_backup_sensor(stale_context(None)).skip_message
