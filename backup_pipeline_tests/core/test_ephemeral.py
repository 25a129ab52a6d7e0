"""Throwaway servers die with their parent, need a password, and leftovers are swept.

Servers are started in a child python process that is then killed with
SIGKILL, as a crashed or OOM-killed drill would be; what is checked is what a
user would find on the machine afterwards: postgres processes, directories,
and whether the port still lets anyone in.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from backup_pipeline.core.ephemeral import EphemeralPostgres, sweep_leftover_servers
from backup_pipeline.core.ephemeral_leftovers import LEGACY_IDLE_SECONDS, OWNER_FILE, server_processes, stop_server_processes

_CHILD = """
import json, sys, time
from backup_pipeline.core.ephemeral import EphemeralPostgres
server = EphemeralPostgres(base_dir=sys.argv[1])
server._die_with_parent = sys.argv[2] == "1"
server.start()
print(json.dumps({"root": str(server.root), "port": server.port, "dsn": server.dsn()}), flush=True)
time.sleep(600)
"""


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A base dir `nobody` can traverse (pytest's tmp_path is not), emptied of servers afterwards."""
    base = Path(tempfile.mkdtemp(prefix="bp-test-ephemeral-"))
    base.chmod(0o711)
    yield base
    for data in base.glob("bp-pg*/data"):
        stop_server_processes(data)
    shutil.rmtree(base, ignore_errors=True)


def start_in_child(base: Path, *, die_with_parent: bool = True) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(base), "1" if die_with_parent else "0"],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    line = child.stdout.readline()
    assert line, f"child exited with {child.wait()} before its server started"
    return child, json.loads(line)


def kill_9(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()


def wait_until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def connect_without_password(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=3)


def owner_dir(base: Path, name: str, pid: int, started: float) -> Path:
    root = base / name
    (root / "data").mkdir(parents=True)
    (root / OWNER_FILE).write_text(json.dumps({"pid": pid, "started": started}))
    return root


@pytest.fixture
def no_pg_password(monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")


def test_killing_the_parent_takes_server_and_backends_down(base_dir, no_pg_password):
    child, info = start_in_child(base_dir)
    data = Path(info["root"]) / "data"
    client = psycopg.connect(info["dsn"], autocommit=True)  # an idle backend must go too
    try:
        assert len(server_processes(data)) >= 2
        kill_9(child)
        assert wait_until(lambda: not server_processes(data), 10), [p.cmdline() for p in server_processes(data)]
        with pytest.raises(psycopg.OperationalError):
            client.execute("SELECT 1")
    finally:
        client.close()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        connect_without_password(info["port"])


@pytest.mark.slow  # two server starts
def test_next_start_removes_a_killed_runs_orphan_and_spares_live_owners(base_dir):
    child, info = start_in_child(base_dir, die_with_parent=False)
    orphan_root = Path(info["root"])
    kill_9(child)
    time.sleep(0.5)
    assert server_processes(orphan_root / "data"), "without PDEATHSIG the server should have outlived its parent"

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        alive = owner_dir(base_dir, "bp-pg18-alive", sleeper.pid, started)
        # The owner's pid now belongs to another process, which postmaster.pid also names: not to be signalled.
        reused = owner_dir(base_dir, "bp-pg18-reused", sleeper.pid, started - 3600)
        (reused / "data" / "postmaster.pid").write_text(f"{sleeper.pid}\n{reused / 'data'}\n")

        with EphemeralPostgres(base_dir=base_dir) as fresh:
            fresh_root = fresh.root
            assert not orphan_root.exists() and not reused.exists()
            assert not server_processes(orphan_root / "data")
            with psycopg.connect(fresh.dsn()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert alive.exists() and sleeper.poll() is None
        assert alive.exists() and not fresh_root.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        connect_without_password(info["port"])


def test_sweep_reports_dead_owners_and_old_unowned_dirs(base_dir):
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = owner_dir(base_dir, "bp-pg16-dead", finished.pid, time.time() - 5)
    old_unowned = base_dir / "bp-pg18-old"
    (old_unowned / "data").mkdir(parents=True)
    long_ago = time.time() - LEGACY_IDLE_SECONDS - 60
    os.utime(old_unowned, (long_ago, long_ago))
    new_unowned = base_dir / "bp-pg18-being-created"
    new_unowned.mkdir()
    mine = owner_dir(base_dir, "bp-pg18-mine", os.getpid(), psutil.Process().create_time())

    assert sorted(sweep_leftover_servers(base_dir)) == sorted([dead, old_unowned])
    assert new_unowned.exists() and mine.exists()


def test_a_default_server_lets_no_one_in_without_its_password(base_dir, no_pg_password):
    with EphemeralPostgres(base_dir=base_dir) as server:
        with pytest.raises(psycopg.OperationalError, match="password"):
            connect_without_password(server.port)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.dsn(password="guess"), connect_timeout=3)
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)

        postmaster = psutil.Process(server._proc.pid)
        assert server.password not in " ".join(postmaster.cmdline())
        assert postmaster.ppid() == os.getpid() and os.getpgid(postmaster.pid) == postmaster.pid
        data = server.data_dir.stat()
        assert data.st_mode & 0o777 == 0o700
        if os.geteuid() == 0:
            assert postmaster.username() == "nobody" and data.st_uid == psutil.Process(postmaster.pid).uids().real
        assert not list(Path(tempfile.gettempdir()).glob(f".s.PGSQL.{server.port}*"))
        assert not list(server.data_dir.glob(".s.PGSQL.*"))
