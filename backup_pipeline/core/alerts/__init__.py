"""Alerts: failed runs, failed verifications, drills that could not run and stale targets, to webhooks, Slack/Discord and email.

One exit point: `send_alert` redacts every text field (URL passwords,
password=... pairs and the known secrets it is given) before any channel sees
the alert, and masks each channel's own secrets (webhook URLs, SMTP password)
in the delivery errors it reports. Channels are configured by environment
variables (`channels_from_env`) and read when an alert is sent.
"""

from backup_pipeline.core.alerts.alert import KINDS, Alert
from backup_pipeline.core.alerts.channels import Channel, Delivery, EmailChannel, SlackChannel, WebhookChannel, send_alert
from backup_pipeline.core.alerts.env import ALERT_ENV_VARS, channels_from_env, known_secrets, run_url
from backup_pipeline.core.alerts.stale import STALE_AFTER, due_stale_alerts

__all__ = [
    "ALERT_ENV_VARS",
    "KINDS",
    "STALE_AFTER",
    "Alert",
    "Channel",
    "Delivery",
    "EmailChannel",
    "SlackChannel",
    "WebhookChannel",
    "channels_from_env",
    "due_stale_alerts",
    "known_secrets",
    "run_url",
    "send_alert",
]
