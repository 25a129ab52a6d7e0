"""Throwaway PostgreSQL servers for the demo, restore drills and tests.

A server lives in its own temporary directory, listens on 127.0.0.1 only (no
Unix socket), and is always stopped and deleted by `stop()` or the context
manager. PostgreSQL refuses to run as root, so when we are root the data
directory is handed to the unprivileged `nobody` user and the server runs as it.
"""

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

from .errors import PgToolError
from .pgconn import PgConn
from .pgtools import PgTools, server_tools

_RUN_AS = "nobody"
# Throwaway data: durability settings off for speed.
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "max_locks_per_transaction": "256",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EphemeralPostgres:
    """A PostgreSQL server of a chosen major (default: newest available) on a free local port."""

    def __init__(
        self,
        major: int | None = None,
        *,
        min_major: int | None = None,
        password: str | None = None,
        base_dir: str | Path | None = None,
        settings: dict[str, str] | None = None,
    ):
        self.tools: PgTools = server_tools(major, min_major=min_major)
        self.password = password
        self.port = 0
        self._base_dir = base_dir
        self._settings = {**_SERVER_SETTINGS, **(settings or {})}
        self.root: Path | None = None
        self._running = False

    @property
    def major(self) -> int:
        return self.tools.major

    @property
    def version(self) -> str:
        return self.tools.version

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    def dsn(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        pw = password if password is not None else (self.password if user == "postgres" else None)
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1", port=str(self.port), user=user, dbname=dbname, **({"password": pw} if pw else {})
        )

    def conn(self, dbname: str = "postgres") -> PgConn:
        return PgConn.parse(self.dsn(dbname))

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(_RUN_AS)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(args, env=env, cwd=str(self.root), **kwargs)

    def start(self) -> "EphemeralPostgres":
        self.root = Path(tempfile.mkdtemp(prefix=f"bp-pg{self.major}-", dir=self._base_dir))
        if os.geteuid() == 0:
            user = pwd.getpwnam(_RUN_AS)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        atexit.register(self.stop)
        initdb = [self.tools.path("initdb"), "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8", "--locale=C"]
        if self.password:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if os.geteuid() == 0:
                os.chown(pwfile, pwd.getpwnam(_RUN_AS).pw_uid, -1)
            initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            initdb += ["--auth=trust"]
        result = self._run(initdb)
        if result.returncode != 0:
            self.stop()
            raise PgToolError(f"initdb ({self.tools.describe()}) failed: {result.stderr.strip()[-800:]}")
        if self.password:
            (self.root / "pwfile").unlink()
        for _attempt in range(3):
            self.port = free_port()
            opts = " ".join(f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in self._settings.items())
            result = self._run(
                [self.tools.path("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
                 "-o", f"-p {self.port} {opts}", "-w", "-t", "60", "start"]
            )
            if result.returncode == 0:
                self._running = True
                return self
        log = (self.root / "server.log").read_text(errors="replace")[-1500:] if (self.root / "server.log").exists() else ""
        self.stop()
        raise PgToolError(f"PostgreSQL {self.version} did not start: {result.stderr.strip()} {log}")

    def stop(self) -> None:
        if self.root is None:
            return
        if self._running:
            self._run([self.tools.path("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"])
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        atexit.unregister(self.stop)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.dsn(name)

    def __enter__(self) -> "EphemeralPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
