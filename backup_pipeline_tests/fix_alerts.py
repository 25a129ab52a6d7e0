"""Local alert sinks: an HTTP server recording webhook POSTs and an SMTP server recording mail.

Both listen on 127.0.0.1 on a free port, run in a thread and stop at teardown.
The SMTP sink is a few lines of socketserver (no aiosmtpd dependency); it
speaks EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP and QUIT, and no TLS.
"""

import base64
import email
import email.policy
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from backup_pipeline.core.alerts import ALERT_ENV_VARS


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: Any
    raw: str


@dataclass
class HttpSink:
    base_url: str
    posts: list[Post] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    def fail(self, path: str, status: int = 500) -> None:
        self.failing[path] = status

    def bodies(self, path: str) -> list[Any]:
        return [post.body for post in self.posts if post.path == path]


class _HttpHandler(BaseHTTPRequestHandler):
    sink: HttpSink

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.server.sink.posts.append(Post(self.path, dict(self.headers), body, raw))  # type: ignore[attr-defined]
        status = self.server.sink.failing.get(self.path, 200)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if status < 400 else b"sink told to fail")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpHandler)
    server.daemon_threads = True
    server.sink = HttpSink(f"http://127.0.0.1:{server.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="http-sink", daemon=True)
    thread.start()
    try:
        yield server.sink  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: str
    login: tuple[str, str] | None

    @property
    def subject(self) -> str:
        """Unfolded: a long subject is folded onto a continuation line, which parsers keep as leading space."""
        return " ".join(str(self.message["Subject"]).split())


@dataclass
class SmtpSink:
    host: str
    port: int
    mails: list[Mail] = field(default_factory=list)


class _SmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        sink: SmtpSink = self.server.sink  # type: ignore[attr-defined]
        sender, recipients, login = "", [], None
        self.reply("220 sink ESMTP ready")
        while line := self.rfile.readline():
            command, _, arg = line.decode().rstrip("\r\n").partition(" ")
            verb = command.upper()
            if verb == "EHLO":
                self.reply("250-sink")
                self.reply("250-8BITMIME")
                self.reply("250 AUTH PLAIN")
            elif verb == "HELO":
                self.reply("250 sink")
            elif verb == "AUTH":
                _, _, initial = arg.partition(" ")
                _, user, password = base64.b64decode(initial).decode().split("\0")
                login = (user, password)
                self.reply("235 authenticated")
            elif verb == "MAIL":
                sender = arg.split(":", 1)[1].split()[0].strip("<>")
                recipients = []
                self.reply("250 ok")
            elif verb == "RCPT":
                recipients.append(arg.split(":", 1)[1].split()[0].strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                raw = b"".join(lines)
                message = email.message_from_bytes(raw, policy=email.policy.default)
                sink.mails.append(Mail(sender, recipients, message, raw.decode(errors="replace"), login))  # type: ignore[arg-type]
                self.reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 command not implemented")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    server = _SmtpServer(("127.0.0.1", 0), _SmtpHandler)
    server.sink = SmtpSink("127.0.0.1", server.server_address[1])  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="smtp-sink", daemon=True)
    thread.start()
    try:
        yield server.sink  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


WEBHOOK_PATH = "/hooks/backup-alerts"
SLACK_PATH = "/services/T0SINK/B0SINK/xoxSlackHookToken42"


@dataclass
class AlertEnv:
    http: HttpSink
    smtp: SmtpSink

    def webhook_bodies(self) -> list[Any]:
        return self.http.bodies(WEBHOOK_PATH)

    def slack_bodies(self) -> list[Any]:
        return self.http.bodies(SLACK_PATH)


@pytest.fixture
def no_alert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No alert channel configured, whatever the machine's environment says."""
    for var in ALERT_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def alert_env(no_alert_env: None, http_sink: HttpSink, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> AlertEnv:
    """Webhook, Slack and email channels configured through the environment, pointing at the sinks."""
    monkeypatch.setenv("BACKUP_ALERT_WEBHOOK_URL", http_sink.url(WEBHOOK_PATH))
    monkeypatch.setenv("BACKUP_ALERT_SLACK_WEBHOOK_URL", http_sink.url(SLACK_PATH))
    monkeypatch.setenv("BACKUP_ALERT_SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("BACKUP_ALERT_SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("BACKUP_ALERT_SMTP_STARTTLS", "false")
    monkeypatch.setenv("BACKUP_ALERT_EMAIL_FROM", "backups@example.com")
    monkeypatch.setenv("BACKUP_ALERT_EMAIL_TO", "ops@example.com, dba@example.com")
    monkeypatch.setenv("BACKUP_UI_URL", "http://dagster.example:3000/")
    return AlertEnv(http_sink, smtp_sink)
