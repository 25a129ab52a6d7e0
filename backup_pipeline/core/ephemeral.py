"""Throwaway PostgreSQL servers for the demo, restore drills and tests.

The design decision: a server is our child and dies with us. The postmaster
runs directly under this process (no `pg_ctl` daemonizing), in its own process
group, with PR_SET_PDEATHSIG, so a kill -9 of the parent takes it down (its
backends follow through the postmaster-death pipe); the data directory that
stays behind is removed by the next `start()` (see ephemeral_leftovers).
PDEATHSIG fires when the *thread* that started the server exits, so start and
stop a server in the same, long-lived thread (all our callers do).

A server lives in its own temporary directory, listens on 127.0.0.1 only (no
Unix socket) and always requires a password (scram-sha-256; a random one
unless the caller gives one, carried by `dsn()`). PostgreSQL refuses to run as
root, so when we are root the data directory (0700) belongs to `nobody` and
the server runs as it.
"""

import atexit
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from .ephemeral_leftovers import (
    PREFIX,
    RUN_AS,
    remove_server_dir,
    stop_server_processes,
    sweep_leftover_servers,
    write_owner_record,
)
from .errors import PgToolError
from .pgconn import PgConn
from .pgtools import PgTools, server_tools

__all__ = ["EphemeralPostgres", "free_port", "sweep_leftover_servers"]

_RUN_AS = RUN_AS
_PR_SET_PDEATHSIG = 1
_DEATH_SIGNAL = int(signal.SIGQUIT)  # the postmaster's immediate shutdown: children stopped, shared memory freed
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
if _prctl is not None:
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_READY_TIMEOUT_SECONDS = 60
_STOP_TIMEOUT_SECONDS = 15
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
# A drill's server is written once by pg_restore and read once: no WAL beyond the minimum (index builds and
# COPY into fresh tables skip it), no checkpoints mid-restore and no autovacuum competing for the CPU.
# Measured on 1 GB of application-shaped data (best of 2): drill 12.5-12.9 s vs 14.9 s with the defaults.
RESTORE_SETTINGS = {
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "autovacuum": "off",
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
        self.password = password or secrets.token_urlsafe(24)
        self.port = 0
        self._base_dir = base_dir
        self._settings = {**_SERVER_SETTINGS, **(settings or {})}
        self.root: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._die_with_parent = True  # tests turn it off to make a real orphan

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

    def _child_setup(self) -> dict:
        """Popen arguments: our uid or nobody's, and PDEATHSIG set after the uid switch (which would clear it)."""
        kwargs: dict = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(_RUN_AS)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        if self._die_with_parent and _prctl is not None:
            parent = os.getpid()

            def die_with_parent() -> None:  # runs in the forked child, after setuid, before exec
                _prctl(_PR_SET_PDEATHSIG, _DEATH_SIGNAL, 0, 0, 0)
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)

            kwargs["preexec_fn"] = die_with_parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs.update(env=env, cwd=str(self.root))
        return kwargs

    def start(self) -> "EphemeralPostgres":
        sweep_leftover_servers(self._base_dir)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.major}-", dir=self._base_dir))
        write_owner_record(self.root)
        atexit.register(self.stop)
        try:
            self.root.chmod(0o711)  # nobody must reach data/, nothing else of ours
            self.data_dir.mkdir(mode=0o700)
            if os.geteuid() == 0:
                user = pwd.getpwnam(_RUN_AS)
                os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            self._initdb()
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, pwd.getpwnam(_RUN_AS).pw_uid, -1)
            os.write(fd, (self.password + "\n").encode())
        finally:
            os.close(fd)
        try:
            result = subprocess.run(
                [self.tools.path("initdb"), "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8", "--locale=C",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                capture_output=True, text=True, **self._child_setup(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PgToolError(f"initdb ({self.tools.describe()}) failed: {result.stderr.strip()[-800:]}")

    def _launch(self) -> None:
        log_path = self.root / "server.log"
        settings = [arg for k, v in self._settings.items() for arg in ("-c", f"{k}={v}")]
        for _attempt in range(3):  # a free port can be taken before the postmaster binds it
            self.port = free_port()
            with open(log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [self.tools.path("postgres"), "-D", str(self.data_dir), "-p", str(self.port), *settings],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, process_group=0,
                    **self._child_setup(),
                )
            if self._wait_ready():
                return
            self._stop_process()
        log = log_path.read_text(errors="replace")[-1500:].strip() if log_path.exists() else ""
        raise PgToolError(f"PostgreSQL {self.version} in {self.data_dir} did not start: {' '.join(log.split())}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group still exists: its leader is not reaped yet
                proc.wait()

    def stop(self) -> None:
        if self.root is None:
            return
        self._stop_process()
        if self.data_dir.exists():
            stop_server_processes(self.data_dir)  # backends outliving a postmaster that was killed
        try:
            remove_server_dir(self.root)
        except OSError:
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
