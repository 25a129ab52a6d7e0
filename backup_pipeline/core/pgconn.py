"""Connecting to PostgreSQL and handing connections to libpq tools safely.

A DSN is parsed once by libpq's own rules (psycopg's conninfo) and turned into
PG* environment variables for pg_dump/pg_restore, so a password is never in
argv. Connection failures become `ConnectionFailed` naming host, port, database
and the likely fix, with the password masked.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .errors import ConfigError, ConnectionFailed
from .redact import redact_dsn, redact_text

SUPABASE_TRANSACTION_POOLER_PORT = 6543

_ENV_FOR_PARAM = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "service": "PGSERVICE",
    "keepalives": None,
    "keepalives_idle": None,
    "keepalives_interval": None,
    "keepalives_count": None,
    "tcp_user_timeout": None,
}
DEFAULT_CONNECT_TIMEOUT = "10"


@dataclass(frozen=True)
class PgConn:
    """One parsed DSN. `where` is the safe name to print: user@host:port/db."""

    dsn: str
    params: Mapping[str, str]

    @classmethod
    def parse(cls, dsn: str, *, what: str = "database URL") -> "PgConn":
        if not dsn or not dsn.strip():
            raise ConfigError(f"the {what} is empty: set it to postgresql://user:password@host:5432/dbname")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            # libpq quotes the word it choked on, which may be a pasted password: drop it.
            detail = re.sub(r' after "[^"]*"', "", " ".join(str(exc).split()))
            shown = f" {redact_dsn(dsn)!r}" if "://" in dsn else ""
            raise ConfigError(
                f"the {what}{shown} is not a valid PostgreSQL connection string "
                f"(libpq: {redact_text(detail, [dsn])}): use postgresql://user:password@host:5432/dbname"
            ) from None
        unknown = sorted(set(params) - set(_ENV_FOR_PARAM))
        if unknown:
            raise ConfigError(f"the {what} {redact_dsn(dsn)!r} has unsupported parameter(s) {', '.join(unknown)}")
        return cls(dsn=dsn, params={k: str(v) for k, v in params.items()})

    @property
    def host(self) -> str:
        return self.params.get("host") or self.params.get("hostaddr") or "localhost"

    @property
    def port(self) -> int:
        try:
            return int(self.params.get("port") or 5432)
        except ValueError:
            raise ConfigError(f"port {self.params.get('port')!r} in {self.where} is not a number") from None

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or "postgres"

    @property
    def user(self) -> str:
        return self.params.get("user") or "postgres"

    @property
    def password(self) -> str | None:
        return self.params.get("password")

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.params.get('port') or 5432}/{self.dbname}"

    def with_dbname(self, dbname: str) -> "PgConn":
        params = dict(self.params, dbname=dbname)
        return PgConn(dsn=psycopg.conninfo.make_conninfo(**params), params=params)

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def check_not_transaction_pooler(self) -> None:
        if self.port == SUPABASE_TRANSACTION_POOLER_PORT:
            raise ConfigError(
                f"{self.where} is port {SUPABASE_TRANSACTION_POOLER_PORT}, Supabase's transaction pooler "
                "(PgBouncer in transaction mode), which cannot run pg_dump: use the direct connection "
                "(db.<project-ref>.supabase.co:5432) or the session pooler (port 5432) instead"
            )

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a libpq tool: inherited PG* variables replaced by this DSN's."""
        env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("PG")}
        for key, value in self.params.items():
            var = _ENV_FOR_PARAM.get(key)
            if var:
                env[var] = value
        env.setdefault("PGCONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
        env["PGDATABASE"] = self.dbname
        return env

    def connect(self, **kwargs) -> psycopg.Connection:
        """psycopg connection; failures become a ConnectionFailed naming the server and the fix."""
        kwargs.setdefault("connect_timeout", int(self.params.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT))
        kwargs.setdefault("application_name", "backup_pipeline")
        try:
            return psycopg.connect(self.dsn, **kwargs)
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(explain_connection_error(self, exc)) from None


def explain_connection_error(conn: PgConn, exc: BaseException) -> str:
    raw = redact_text(str(exc), conn.secrets()).strip()
    low = raw.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        fix = f"check the password for user {conn.user!r} in the database URL"
    elif "does not exist" in low and "database" in low:
        fix = f"database {conn.dbname!r} does not exist on {conn.host}:{conn.port}: fix the database name in the URL"
    elif "role" in low and "does not exist" in low:
        fix = f"user {conn.user!r} does not exist on {conn.host}:{conn.port}: fix the user name in the URL"
    elif "connection refused" in low:
        fix = f"nothing accepts connections on {conn.host}:{conn.port}: check host and port, and that the server runs"
    elif "timeout" in low or "timed out" in low:
        fix = f"{conn.host}:{conn.port} did not answer in time: check host, port and firewall rules"
    elif "could not translate host name" in low or "name or service not known" in low:
        fix = f"host {conn.host!r} cannot be resolved: check the host name in the URL"
    elif "ssl" in low:
        fix = "check sslmode in the URL (Supabase needs sslmode=require with SSL-capable tools)"
    else:
        fix = "check the database URL"
    first_line = raw.splitlines()[-1].strip() if raw else type(exc).__name__
    return f"cannot connect to {conn.where}: {first_line} — {fix}"
