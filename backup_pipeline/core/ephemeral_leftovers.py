"""Finding and removing throwaway PostgreSQL servers left behind by killed runs.

Every server directory (`bp-pg*`) holds an owner record: pid and start time of
the process that made it (a pid alone gets reused). A directory whose owner is
gone is a leftover: any postgres process still running in its data directory
is stopped and the directory deleted. Processes are recognised by what they
are (a `postgres` whose working directory is that data directory), never by a
pid read from a file, so a reused pid is never signalled.
"""

import json
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil

PREFIX = "bp-pg"
OWNER_FILE = "owner.json"
RUN_AS = "nobody"
# Directories without an owner record come from before owner records existed
# (or are being created right now): idle ones are removed once clearly not in
# creation, running ones only when older than any drill could be.
LEGACY_IDLE_SECONDS = 600
LEGACY_RUNNING_SECONDS = 24 * 3600
_STOP_GRACE_SECONDS = 5


def write_owner_record(root: Path) -> None:
    record = {"pid": os.getpid(), "started": psutil.Process().create_time()}
    (root / OWNER_FILE).write_text(json.dumps(record))


def owner_alive(record: dict) -> bool:
    try:
        proc = psutil.Process(int(record["pid"]))
        return abs(proc.create_time() - float(record["started"])) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False


def server_processes(data_dir: Path) -> list[psutil.Process]:
    """The postgres processes (postmaster, backends) running in data_dir, and an initdb still filling it."""
    targets = {os.path.realpath(data_dir), os.path.realpath(data_dir.parent)}
    found = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if not (name.startswith("postgres") or name == "initdb"):
            continue
        try:
            if proc.cwd() in targets:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def stop_server_processes(data_dir: Path) -> None:
    """SIGQUIT (immediate shutdown: the postmaster also frees its shared memory), then SIGKILL."""
    procs = server_processes(data_dir)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGQUIT)
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=_STOP_GRACE_SECONDS)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=_STOP_GRACE_SECONDS)


def remove_server_dir(root: Path) -> None:
    """Delete a server directory, its owner record last: a removal cut short is finished by the next sweep."""
    for entry in root.iterdir() if root.is_dir() else ():
        if entry.name == OWNER_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    (root / OWNER_FILE).unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        pass


def _ours(path: Path) -> bool:
    uids = {os.geteuid()}
    if os.geteuid() == 0:
        uids.add(pwd.getpwnam(RUN_AS).pw_uid)  # directories made before owner records were handed to it
    return path.lstat().st_uid in uids


def _is_leftover(root: Path) -> bool:
    record_file = root / OWNER_FILE
    if record_file.exists():
        if record_file.lstat().st_uid != os.geteuid():
            return False
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            return False
        return not owner_alive(record)
    if not _ours(root):
        return False
    age = time.time() - root.lstat().st_mtime
    running = bool(server_processes(root / "data"))
    return age > (LEGACY_RUNNING_SECONDS if running else LEGACY_IDLE_SECONDS)


def sweep_leftover_servers(base_dir: str | Path | None = None) -> list[Path]:
    """Stop and delete the servers in base_dir (default: the temp dir) whose owner process is gone.

    Returns the directories removed. A directory whose owner is alive is never touched.
    """
    base = Path(base_dir) if base_dir is not None else Path(tempfile.gettempdir())
    removed = []
    for root in sorted(base.glob(PREFIX + "*")):
        try:
            if root.is_symlink() or not root.is_dir() or not _is_leftover(root):
                continue
        except OSError:
            continue  # vanished or unreadable: another sweep got there first
        stop_server_processes(root / "data")
        try:
            remove_server_dir(root)
        except OSError:
            continue
        if not root.exists():
            removed.append(root)
    return removed
