"""Alert settings from environment variables: channels, the UI address for run links, secrets to mask.

Read when an alert is sent, like the DSNs, so no channel URL or password is
ever part of a Dagster definition or config.
"""

import os
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from backup_pipeline.core.alerts.channels import Channel, EmailChannel, SlackChannel, WebhookChannel
from backup_pipeline.core.config import DSN_ENV_VARS
from backup_pipeline.core.errors import ConfigError

DEFAULT_UI_URL = "http://127.0.0.1:3000"
DEFAULT_SMTP_PORT = 587
PLAIN_SMTP_PORTS = (25, 1025)  # relays and local catchers that speak no TLS
ALERT_ENV_VARS = (
    "BACKUP_ALERT_WEBHOOK_URL",
    "BACKUP_ALERT_SLACK_WEBHOOK_URL",
    "DISCORD_WEBHOOK_URL",
    "BACKUP_ALERT_SMTP_HOST",
    "BACKUP_ALERT_SMTP_PORT",
    "BACKUP_ALERT_SMTP_USER",
    "BACKUP_ALERT_SMTP_PASSWORD",
    "BACKUP_ALERT_SMTP_STARTTLS",
    "BACKUP_ALERT_EMAIL_FROM",
    "BACKUP_ALERT_EMAIL_TO",
    "BACKUP_UI_URL",
)
# Not part of any alert, but masked in every alert should an error quote them.
_SECRET_ENV_VARS = ("R2_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def _http_url(var: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Name the variable, never the value: a webhook URL is a credential.
        raise ConfigError(f"{var} is not an http(s) URL: set it to the webhook address, e.g. https://hooks.example.com/...")
    return value


def _flag(var: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{var}={value!r} is not a boolean: use true or false")


def _email_channel(env: Mapping[str, str]) -> EmailChannel:
    try:
        port = int(env.get("BACKUP_ALERT_SMTP_PORT") or DEFAULT_SMTP_PORT)
    except ValueError:
        raise ConfigError(f"BACKUP_ALERT_SMTP_PORT={env['BACKUP_ALERT_SMTP_PORT']!r} is not a port number") from None
    recipients = tuple(addr.strip() for addr in (env.get("BACKUP_ALERT_EMAIL_TO") or "").split(",") if addr.strip())
    if not recipients:
        raise ConfigError("BACKUP_ALERT_SMTP_HOST is set but BACKUP_ALERT_EMAIL_TO is not: set it to comma-separated addresses")
    sender = env.get("BACKUP_ALERT_EMAIL_FROM") or env.get("BACKUP_ALERT_SMTP_USER")
    if not sender or "@" not in sender:
        raise ConfigError("BACKUP_ALERT_EMAIL_FROM is not set: set it to the sender address, e.g. backups@example.com")
    starttls_value = env.get("BACKUP_ALERT_SMTP_STARTTLS")
    starttls = _flag("BACKUP_ALERT_SMTP_STARTTLS", starttls_value) if starttls_value else port not in PLAIN_SMTP_PORTS
    return EmailChannel(
        host=env["BACKUP_ALERT_SMTP_HOST"], port=port, sender=sender, recipients=recipients,
        username=env.get("BACKUP_ALERT_SMTP_USER") or None, password=env.get("BACKUP_ALERT_SMTP_PASSWORD") or None,
        starttls=starttls,
    )


def channels_from_env(env: Mapping[str, str] | None = None) -> list[Channel]:
    """Every configured channel; none configured is an empty list, a half-configured one a ConfigError."""
    env = os.environ if env is None else env
    channels: list[Channel] = []
    if url := env.get("BACKUP_ALERT_WEBHOOK_URL"):
        channels.append(WebhookChannel(_http_url("BACKUP_ALERT_WEBHOOK_URL", url)))
    if url := env.get("BACKUP_ALERT_SLACK_WEBHOOK_URL"):
        channels.append(SlackChannel(_http_url("BACKUP_ALERT_SLACK_WEBHOOK_URL", url)))
    if url := env.get("DISCORD_WEBHOOK_URL"):
        parts = urlsplit(_http_url("DISCORD_WEBHOOK_URL", url))
        path = parts.path.rstrip("/")
        # Discord takes Slack's payload at <webhook>/slack.
        path = path if path.endswith("/slack") else f"{path}/slack"
        channels.append(SlackChannel(parts._replace(path=path).geturl(), name="discord"))
    if env.get("BACKUP_ALERT_SMTP_HOST"):
        channels.append(_email_channel(env))
    return channels


def run_url(run_id: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    base = (env.get("BACKUP_UI_URL") or DEFAULT_UI_URL).rstrip("/")
    return f"{base}/runs/{run_id}"


def _dsn_secrets(dsn: str) -> list[str]:
    """The DSN itself and its password, raw and percent-decoded: error texts quote either."""
    out = [dsn]
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        out.append(str(password))
    if "://" in dsn and (raw := urlsplit(dsn).password):
        out += [raw, unquote(raw)]
    return out


def known_secrets(dsn_env_vars: Iterable[str] = (), env: Mapping[str, str] | None = None) -> list[str]:
    """Values to mask in alerts: the DSNs (and their passwords) in the given variables and the seed ones,
    object-storage keys and the history database URL."""
    env = os.environ if env is None else env
    secrets: list[str] = []
    for var in dict.fromkeys([*dsn_env_vars, *DSN_ENV_VARS, "BACKUP_HISTORY_URL"]):
        if value := env.get(var):
            secrets += _dsn_secrets(value)
    secrets += [env[var] for var in _SECRET_ENV_VARS if env.get(var)]
    return list(dict.fromkeys(secrets))
