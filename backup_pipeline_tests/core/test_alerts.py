"""Alert channels against local HTTP and SMTP sinks: contents, redaction, one broken channel, staleness."""

import socket
from datetime import UTC, datetime, timedelta

import pytest

from backup_pipeline.core.alerts import (
    Alert,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    channels_from_env,
    due_stale_alerts,
    known_secrets,
    run_url,
    send_alert,
)
from backup_pipeline.core.errors import ConfigError

PASSWORD = "Hunter2-Db-Pass"
DSN = f"postgresql://shop_owner:{PASSWORD}@db.example.com:5432/shop"
RUN_URL = "http://dagster.example:3000/runs/abc-123"


def failing_alert(**overrides) -> Alert:
    values = dict(
        kind="run_failed", target="shop", job="backup", step="dump", run_id="abc-123", run_url=RUN_URL,
        backup_id="shop-20250101T020000Z", happened_at=datetime(2025, 1, 1, 2, 5, tzinfo=UTC),
        error=f"could not connect to {DSN}: password={PASSWORD} rejected (password {PASSWORD} is wrong)",
    )
    return Alert(**{**values, **overrides})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def email_channel(smtp_sink, **overrides) -> EmailChannel:
    values = dict(host=smtp_sink.host, port=smtp_sink.port, sender="backups@example.com",
                  recipients=("ops@example.com",), starttls=False)
    return EmailChannel(**{**values, **overrides})


def test_webhook_posts_one_json_object_with_every_field(http_sink):
    results = send_alert(failing_alert(), [WebhookChannel(http_sink.url("/hook"))], secrets=[PASSWORD])
    assert results == [("webhook", True, None)]
    [post] = http_sink.posts
    assert post.headers["Content-Type"] == "application/json"
    body = post.body
    assert (body["kind"], body["target"], body["job"], body["step"]) == ("run_failed", "shop", "backup", "dump")
    assert body["run_url"] == RUN_URL and body["backup_id"] == "shop-20250101T020000Z"
    assert body["happened_at"] == "2025-01-01T02:05:00+00:00"
    assert "postgresql://shop_owner:***@db.example.com:5432/shop" in body["error"]
    assert "target shop" in body["title"] and RUN_URL in body["text"]
    assert PASSWORD not in post.raw


def test_slack_payload_has_text_link_and_fields(http_sink):
    url = http_sink.url("/services/T000/B000/secretToken")
    assert send_alert(failing_alert(error="pg_dump: error: relation <orders> & more"), [SlackChannel(url)]) == [
        ("slack", True, None)]
    body = http_sink.posts[0].body
    text = body["text"]
    assert text.startswith("*Backup pipeline run failed: target shop, job backup, step dump*")
    assert f"Run: <{RUN_URL}|open in Dagster>" in text
    assert "relation &lt;orders&gt; &amp; more" in text  # Slack's mrkdwn escapes
    assert "Step: dump" in text and "Target: shop" in text
    [attachment] = body["attachments"]
    assert attachment["title_link"] == RUN_URL and attachment["color"] == "#d00000"


def test_email_names_target_job_step_error_and_run_link(smtp_sink):
    channel = email_channel(smtp_sink, recipients=("ops@example.com", "dba@example.com"),
                            username="alerts", password="smtp-pass-123")
    assert send_alert(failing_alert(), [channel], secrets=[PASSWORD]) == [("email", True, None)]
    [mail] = smtp_sink.mails
    assert mail.sender == "backups@example.com" and mail.recipients == ["ops@example.com", "dba@example.com"]
    assert mail.login == ("alerts", "smtp-pass-123")
    assert mail.subject == "Backup pipeline run failed: target shop, job backup, step dump"
    body = mail.message.get_content()
    for expected in ("Target: shop", "Job: backup", "Step: dump", f"Run: {RUN_URL}", "Backup: shop-20250101T020000Z"):
        assert expected in body
    assert PASSWORD not in body and "smtp-pass-123" not in body and PASSWORD not in mail.raw


def test_a_failing_channel_is_reported_and_the_others_still_deliver(http_sink, smtp_sink):
    slack_url = http_sink.url("/services/T000/B000/brokenSlackToken")
    http_sink.fail("/services/T000/B000/brokenSlackToken", 500)
    channels = [
        SlackChannel(slack_url),
        EmailChannel(host="127.0.0.1", port=closed_port(), sender="b@example.com", recipients=("o@example.com",),
                     password="smtp-pass-123", starttls=False),
        WebhookChannel(http_sink.url("/hook")),
        email_channel(smtp_sink),
    ]
    results = send_alert(failing_alert(), channels, secrets=[PASSWORD])
    assert [(r.channel, r.ok) for r in results] == [("slack", False), ("email", False), ("webhook", True), ("email", True)]
    assert "500" in results[0].error
    assert "ConnectionRefusedError" in results[1].error
    assert len(http_sink.bodies("/hook")) == 1 and len(smtp_sink.mails) == 1
    for result in results:
        assert "brokenSlackToken" not in repr(result) and "smtp-pass-123" not in repr(result)
    # The channel objects do not show their secrets either (they end up in reprs and logs).
    assert "brokenSlackToken" not in repr(channels) and "smtp-pass-123" not in repr(channels)


def test_an_email_server_without_starttls_is_a_reported_failure(smtp_sink):
    [result] = send_alert(failing_alert(), [email_channel(smtp_sink, starttls=True)])
    assert not result.ok and "STARTTLS" in result.error
    assert smtp_sink.mails == []


def test_secrets_never_leave_the_process(http_sink, smtp_sink):
    slack_path = "/services/T000/B000/leakyToken"
    error = (f"boom: {DSN} and bare {PASSWORD}, and the hook {http_sink.url(slack_path)} "
             f"with conninfo 'host=db password={PASSWORD}'")
    channels = [WebhookChannel(http_sink.url("/hook")), SlackChannel(http_sink.url(slack_path)), email_channel(smtp_sink)]
    results = send_alert(failing_alert(error=error), channels, secrets=known_secrets(["SHOP_URL"], {"SHOP_URL": DSN}))
    assert all(r.ok for r in results)
    [mail] = smtp_sink.mails
    payloads = [post.raw for post in http_sink.posts] + [mail.raw, mail.message.get_content()]
    assert len(payloads) == 4
    for payload in payloads:
        assert PASSWORD not in payload and "leakyToken" not in payload
    assert "shop_owner:***@db.example.com" in mail.message.get_content()


def test_long_errors_are_cut_to_what_discord_accepts(http_sink):
    send_alert(failing_alert(error="x" * 10_000), [SlackChannel(http_sink.url("/services/a/b/c"))])
    assert len(http_sink.posts[0].body["text"]) < 2000


def test_channels_from_env():
    env = {
        "BACKUP_ALERT_WEBHOOK_URL": "https://hooks.example.com/backup",
        "BACKUP_ALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
        "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/token/",
        "BACKUP_ALERT_SMTP_HOST": "smtp.example.com",
        "BACKUP_ALERT_SMTP_USER": "alerts@example.com",
        "BACKUP_ALERT_SMTP_PASSWORD": "pw",
        "BACKUP_ALERT_EMAIL_TO": "a@example.com, b@example.com,",
    }
    webhook, slack, discord, mail = channels_from_env(env)
    assert webhook == WebhookChannel("https://hooks.example.com/backup")
    assert slack == SlackChannel("https://hooks.slack.com/services/T/B/x")
    assert discord == SlackChannel("https://discord.com/api/webhooks/1/token/slack", name="discord")
    assert (mail.host, mail.port, mail.starttls, mail.sender) == ("smtp.example.com", 587, True, "alerts@example.com")
    assert mail.recipients == ("a@example.com", "b@example.com")
    assert channels_from_env({"DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/t/slack"})[0].url.endswith("/t/slack")
    plain = channels_from_env({"BACKUP_ALERT_SMTP_HOST": "relay", "BACKUP_ALERT_SMTP_PORT": "25",
                               "BACKUP_ALERT_EMAIL_FROM": "b@example.com", "BACKUP_ALERT_EMAIL_TO": "o@example.com"})
    assert plain[0].starttls is False
    assert channels_from_env({}) == []


@pytest.mark.parametrize(("env", "message"), [
    ({"BACKUP_ALERT_SLACK_WEBHOOK_URL": "hooks.slack.com/services/T/B/secretish"}, "BACKUP_ALERT_SLACK_WEBHOOK_URL"),
    ({"BACKUP_ALERT_SMTP_HOST": "smtp", "BACKUP_ALERT_EMAIL_FROM": "b@example.com"}, "BACKUP_ALERT_EMAIL_TO"),
    ({"BACKUP_ALERT_SMTP_HOST": "smtp", "BACKUP_ALERT_EMAIL_TO": "o@example.com"}, "BACKUP_ALERT_EMAIL_FROM"),
    ({"BACKUP_ALERT_SMTP_HOST": "smtp", "BACKUP_ALERT_SMTP_PORT": "x", "BACKUP_ALERT_EMAIL_TO": "o@example.com",
      "BACKUP_ALERT_EMAIL_FROM": "b@example.com"}, "BACKUP_ALERT_SMTP_PORT"),
])
def test_half_configured_channels_are_config_errors_without_the_secret(env, message):
    with pytest.raises(ConfigError, match=message) as info:
        channels_from_env(env)
    assert "secretish" not in str(info.value)


def test_run_url_and_known_secrets():
    assert run_url("r1", {}) == "http://127.0.0.1:3000/runs/r1"
    assert run_url("r1", {"BACKUP_UI_URL": "https://dagster.example/"}) == "https://dagster.example/runs/r1"
    secrets = known_secrets(["SHOP_URL"], {"SHOP_URL": "postgresql://u:p%40ss-word@h/db", "DATABASE_URL": DSN,
                                           "AWS_SECRET_ACCESS_KEY": "aws-secret-key"})
    assert {"p%40ss-word", "p@ss-word", PASSWORD, DSN, "aws-secret-key"} <= set(secrets)


NOW = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


def test_stale_targets_alert_once_per_utc_day():
    last = {"fresh": NOW - timedelta(hours=3), "stale": NOW - timedelta(hours=27), "never": None}
    alerts, cursor = due_stale_alerts(last, {}, NOW)
    assert [(a.kind, a.target) for a in alerts] == [("stale_target", "never"), ("stale_target", "stale")]
    assert "27.0 hours ago" in alerts[1].error and "no completed backup" in alerts[0].error
    assert cursor == {"never": "2025-03-10", "stale": "2025-03-10"}

    again, cursor = due_stale_alerts(last, cursor, NOW + timedelta(hours=14, minutes=59))  # 23:59 the same day
    assert again == [] and cursor == {"never": "2025-03-10", "stale": "2025-03-10"}

    next_day, cursor = due_stale_alerts(last, cursor, NOW + timedelta(hours=15))  # 00:00 the next day
    assert [a.target for a in next_day] == ["never", "stale"]
    assert cursor == {"never": "2025-03-11", "stale": "2025-03-11"}


def test_a_recovered_or_removed_target_leaves_the_cursor():
    cursor = {"stale": "2025-03-10", "gone": "2025-03-10"}
    alerts, cursor = due_stale_alerts({"stale": NOW - timedelta(hours=1)}, cursor, NOW)
    assert alerts == [] and cursor == {}
    alerts, _ = due_stale_alerts({"stale": NOW - timedelta(hours=26, seconds=1)}, cursor, NOW)
    assert [a.target for a in alerts] == ["stale"]  # stale again the same day: alerts at once
