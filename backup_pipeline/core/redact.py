"""Removing secrets from DSNs and free text before they are shown anywhere.

Everything that leaves the core for a log line, an exception, Dagster metadata
or the history table goes through `redact_dsn` or `redact_text` first.
"""

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
URL_HINT = "postgresql://user:password@host:5432/dbname"

# password=... in key/value conninfo strings and in URL query strings
_KV_PASSWORD = re.compile(r"(?i)\b(password|secret[_a-z]*|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)")
# scheme://user:password@host inside arbitrary text
_AGE_SECRET_KEY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):([^@\s]*)@")


def redact_dsn(dsn: str | None) -> str:
    """Return the DSN with its password replaced by ***; safe to print."""
    if not dsn:
        return ""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        query = _KV_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", dsn)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask URL passwords, password=... pairs and each known secret in text."""
    if URL_HINT in text:  # the example URL in fix hints is no secret: keep it readable
        return URL_HINT.join(redact_text(part, secrets) for part in text.split(URL_HINT))
    out = _URL_USERINFO.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    out = _KV_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", out)
    out = _AGE_SECRET_KEY.sub(f"AGE-SECRET-KEY-{MASK}", out)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, MASK)
    return out
