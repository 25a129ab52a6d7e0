"""Run locks: telling a run that is still working from one that died.

Design decision: the process running a run holds an exclusive flock on
`<stage_root>/.locks/<run_id>.lock` for as long as it lives; the kernel drops
it when the process dies, however it dies (kill -9, OOM). So another process
that can take the lock knows the run's process is gone, with no clock, pid
reuse or heartbeat to trust. A lock file becomes visible only already locked
(created under a temp name, locked, then renamed), so a sweeper can never
take the lock of a run that is just starting. Where there is no lock file
(another host, or a run from before locks) the run's Dagster status decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

LOCK_DIR = ".locks"
# Dagster run ids are uuid4 strings; nothing else under the stage root is ever swept.
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PAUSE_ENV = "BACKUP_PIPELINE_TEST_PAUSE"

# Dagster run states as the caller's run_state callback reports them.
RUN_ACTIVE = "active"
RUN_TERMINAL = "terminal"
RUN_MISSING = "missing"
_LOCK_FREE = "its process is gone (run lock free)"


@dataclass
class _Held:
    stage_root: Path
    fd: int
    storages: dict[str, list[str]] = field(default_factory=dict)


_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


def is_run_id(name: str) -> bool:
    return bool(_RUN_ID.match(name))


def lock_path(stage_root: Path, run_id: str) -> Path:
    return Path(stage_root) / LOCK_DIR / f"{run_id}.lock"


def info_path(stage_root: Path, run_id: str) -> Path:
    return Path(stage_root) / LOCK_DIR / f"{run_id}.json"


def hold_run_lock(stage_root: Path, run_id: str) -> None:
    """Take this run's lock for the life of this process; a second call for the same run does nothing."""
    with _held_lock:
        if run_id in _held:
            return
        locks = Path(stage_root) / LOCK_DIR
        locks.mkdir(parents=True, exist_ok=True)
        tmp = locks / f".{run_id}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
            os.replace(tmp, lock_path(stage_root, run_id))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _held[run_id] = _Held(Path(stage_root), fd)
        _write_info(run_id)


def note_storage(run_id: str, target: str, storage_url: str) -> None:
    """Remember where this run writes target's backups, so a successor can find what it left there."""
    with _held_lock:
        held = _held.get(run_id)
        if held is None or storage_url in held.storages.get(target, []):
            return
        held.storages.setdefault(target, []).append(storage_url)
        _write_info(run_id)


def _write_info(run_id: str) -> None:
    held = _held[run_id]
    info = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(), "storages": held.storages}
    path = info_path(held.stage_root, run_id)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def run_info(stage_root: Path, run_id: str) -> dict:
    """What the run recorded about itself (storages it wrote to); {} if nothing readable."""
    try:
        info = json.loads(info_path(stage_root, run_id).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def holds(run_id: str) -> bool:
    return run_id in _held


def release_run(run_id: str, *, delete_stage: bool = True) -> None:
    """The end of this process's run: delete its stage, its lock and info files, then drop the lock."""
    with _held_lock:
        held = _held.pop(run_id, None)
    if held is None:
        return
    if delete_stage:
        shutil.rmtree(held.stage_root / run_id, ignore_errors=True)
    for path in (info_path(held.stage_root, run_id), lock_path(held.stage_root, run_id)):
        with contextlib.suppress(OSError):
            path.unlink()
    os.close(held.fd)


def flock_held(path: Path) -> bool | None:
    """True if a live process holds path's flock, False if nobody does, None if there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def lock_free(stage_root: Path, run_id: str) -> bool | None:
    """True if run_id's lock file exists and nobody holds it, False if held, None if there is no lock file."""
    held = flock_held(lock_path(stage_root, run_id))
    return None if held is None else not held


def remove_dead_lock(stage_root: Path, run_id: str) -> bool:
    """Delete the lock and info files of a run whose process is gone; never a held lock."""
    path = lock_path(stage_root, run_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Unlink only the file we locked, not one a relaunched run just renamed into place.
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            return False
        with contextlib.suppress(OSError):
            info_path(stage_root, run_id).unlink()
        path.unlink()
        return True
    except (BlockingIOError, FileNotFoundError):
        return False
    finally:
        os.close(fd)


class RunJudge:
    """Decides, once per run id, whether a run is provably dead.

    run_state(run_id) reports the run's Dagster status (RUN_ACTIVE,
    RUN_TERMINAL, RUN_MISSING) or None when no Dagster instance is at hand.
    A lock some live process holds always means alive, whatever Dagster says.
    """

    def __init__(self, stage_root: Path, run_state: Callable[[str], str | None], current_run: str | None = None):
        self.stage_root = Path(stage_root)
        self.run_state = run_state
        self.current_run = current_run
        self._verdicts: dict[str, tuple[bool, str]] = {}

    def dead(self, run_id: str | None) -> bool:
        return self.verdict(run_id)[0]

    def verdict(self, run_id: str | None) -> tuple[bool, str]:
        """(dead, why) for run_id."""
        if not run_id:
            return False, "no run id recorded"
        if run_id not in self._verdicts:
            self._verdicts[run_id] = self._judge(run_id)
        return self._verdicts[run_id]

    def lock_free_runs(self) -> list[str]:
        """Runs judged so far whose process is gone by their free lock (Dagster may still think them running)."""
        return [r for r, (dead, why) in self._verdicts.items() if dead and why == _LOCK_FREE]

    def _judge(self, run_id: str) -> tuple[bool, str]:
        if run_id == self.current_run:
            return False, "this run"
        if holds(run_id):
            # A run this process ran earlier (tests, long-lived workers): only Dagster can say it ended.
            state = self.run_state(run_id)
            return state in (RUN_TERMINAL, RUN_MISSING), f"run of this process, Dagster says {state}"
        free = lock_free(self.stage_root, run_id)
        if free is True:
            return True, _LOCK_FREE
        if free is False:
            return False, "its process holds the run lock"
        state = self.run_state(run_id)
        if state == RUN_TERMINAL:
            return True, "its Dagster run has ended"
        if state == RUN_MISSING:
            return True, "its Dagster run does not exist"
        return False, f"no run lock here and Dagster says {state or 'nothing (no instance)'}"


def pause_if_asked(point: str) -> None:
    """Test hook: with BACKUP_PIPELINE_TEST_PAUSE=<point>:<file>, create file and sleep, to be killed there."""
    wanted, _, marker = os.environ.get(PAUSE_ENV, "").partition(":")
    if wanted != point or not marker:
        return
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)
