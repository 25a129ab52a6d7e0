"""Delivery channels: a generic JSON webhook, a Slack incoming webhook (also Discord's `/slack`) and SMTP email.

A channel's URL or password is itself a secret (a Slack webhook URL is enough
to post into the channel), so channels describe themselves by host only and
every delivery error is redacted with the channel's secrets before it is returned.
"""

import json
import smtplib
import ssl
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from backup_pipeline.core.alerts.alert import Alert
from backup_pipeline.core.redact import redact_text

TIMEOUT_SECONDS = 10
USER_AGENT = "backup-pipeline-alerts/1"


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...

    def secrets(self) -> list[str]: ...


class Delivery(NamedTuple):
    channel: str
    ok: bool
    error: str | None = None


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    # The path is where webhook tokens live; a short one ("/", "/hook") is no secret worth masking everywhere.
    return [url, *([tail] if len(tail) >= 8 else [])]


def post_json(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) checked in env.py
        response.read()


@dataclass(frozen=True)
class WebhookChannel:
    """POSTs the alert as one JSON object: kind, title, text, target, job, step, error, run_url, backup_id, ..."""

    url: str = field(repr=False)
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        post_json(self.url, alert.to_dict())

    def secrets(self) -> list[str]:
        return _url_secrets(self.url)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class SlackChannel:
    """Slack incoming-webhook shape (`text` in mrkdwn plus one attachment), also accepted by Discord's `/slack`."""

    url: str = field(repr=False)
    name: str = "slack"

    def payload(self, alert: Alert) -> dict[str, Any]:
        lines = [f"*{_slack_escape(alert.title)}*"]
        for label, value in alert.fields():
            if label == "Run" and alert.run_url:
                lines.append(f"Run: <{alert.run_url}|open in Dagster>")
            else:
                lines.append(f"{label}: {_slack_escape(value)}")
        # Everything is in `text` (what notifications and Discord show); the attachment adds colour and a link.
        attachment = {"color": "#e0a000" if alert.kind in ("stale_target", "drill_error") else "#d00000",
                      "fallback": _slack_escape(alert.title)}
        if alert.run_url:
            attachment["title"] = "Run in Dagster"
            attachment["title_link"] = alert.run_url
        return {"text": "\n".join(lines), "attachments": [attachment]}

    def send(self, alert: Alert) -> None:
        post_json(self.url, self.payload(alert))

    def secrets(self) -> list[str]:
        return _url_secrets(self.url)


@dataclass(frozen=True)
class EmailChannel:
    """Plain-text email over SMTP; STARTTLS and login when configured."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    name: str = "email"

    def message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = " ".join(alert.title.split())  # one line: a newline would end the header
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(alert.text() + "\n")
        return message

    def send(self, alert: Alert) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(self.message(alert), from_addr=self.sender, to_addrs=list(self.recipients))

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []


def send_alert(alert: Alert, channels: Sequence[Channel], secrets: Iterable[str | None] = ()) -> list[Delivery]:
    """Redact the alert once, then try every channel; a failing channel is reported, never raised."""
    channel_secrets = [secret for channel in channels for secret in channel.secrets()]
    # Channel secrets are masked in the alert too: an error text could quote a webhook URL.
    clean = alert.redacted([*secrets, *channel_secrets])
    results = []
    for channel in channels:
        try:
            channel.send(clean)
        except Exception as exc:  # noqa: BLE001 - one broken channel must not silence the others
            message = redact_text(f"{type(exc).__name__}: {exc}", [*secrets, *channel_secrets])
            results.append(Delivery(channel.name, False, message))
        else:
            results.append(Delivery(channel.name, True))
    return results
