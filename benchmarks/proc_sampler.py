"""Samplers for five_ways.py: a process tree's peak memory and start times, and a directory's peak size.

The design decision: poll (every 50 ms) rather than trace. A process tree is
read with psutil; each process's own peak (VmHWM in /proc/<pid>/status)
covers what happens between two polls, and the tree's peak is the largest sum
of those per-process peaks over the processes alive at one poll (shared
pages, e.g. PostgreSQL's shared buffers, count once per process). When a
process first appears its creation time is kept relative to the root's, so
"how long after exec did pg_dump start" needs no fast polling and no boot-time
arithmetic (both times share the same clock base).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil

POLL_SECONDS = 0.05


def _kib_field(path: str, key: str) -> int | None:
    """The `key:` line of a /proc file that counts kB (status, smaps_rollup), in bytes."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def pss(pid: int) -> int | None:
    """Proportional set size of a live process (shared pages divided among their sharers), in bytes."""
    return _kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def vm_hwm(pid: int) -> int | None:
    """Peak resident set size of a live process (VmHWM), in bytes."""
    return _kib_field(f"/proc/{pid}/status", "VmHWM:")


class _Poller(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(POLL_SECONDS)

    def sample(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()


class TreeSampler(_Poller):
    """Peak memory of a process and its descendants, per executable name too, and when each name first ran.

    `tree_peak`: the largest sum of per-process peaks at one poll. `peaks`: the
    same per executable name ("python", "pg_dump", "postgres", ...).
    `first_start[name]`: seconds from the root's start to the creation (fork)
    of the first process seen under that name. `pss_peak`: the largest sum of
    PSS at one poll, which counts shared memory (a server's shared buffers)
    once; `peak_without`: tree_peak over the processes not named in `without`
    (e.g. the drill's throwaway PostgreSQL).
    """

    def __init__(self, pid: int, without: tuple[str, ...] = ("postgres",)):
        super().__init__("tree-sampler")
        self.without = without
        self.pss_peak = 0
        self.peak_without = 0
        self.root = psutil.Process(pid)
        self._root_started = self.root.create_time()
        self._own_peak: dict[int, int] = {}
        self.tree_peak = 0
        self.peaks: dict[str, int] = {}
        self.first_start: dict[str, float] = {}

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = total_pss = total_without = 0
        by_name: dict[str, int] = {}
        for proc in procs:
            try:
                name = proc.name()  # read every time: an exec (e.g. bash's last command) changes it
                if name not in self.first_start:
                    self.first_start[name] = proc.create_time() - self._root_started
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            peak = max(self._own_peak.get(proc.pid, 0), rss, vm_hwm(proc.pid) or 0)
            self._own_peak[proc.pid] = peak
            total += peak
            total_pss += pss(proc.pid) or 0
            total_without += 0 if name in self.without else peak
            by_name[name] = by_name.get(name, 0) + peak
        self.tree_peak = max(self.tree_peak, total)
        self.pss_peak = max(self.pss_peak, total_pss)
        self.peak_without = max(self.peak_without, total_without)
        for name, value in by_name.items():
            self.peaks[name] = max(self.peaks.get(name, 0), value)


def postgres_cpu_seconds(data_dir: Path) -> float:
    """CPU seconds used so far by a running PostgreSQL: the postmaster, its live children and the reaped ones.

    Backends exit when their connection closes and the postmaster reaps them,
    so the difference of two readings is the server's work in between.
    """
    postmaster = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    # A backend that has just exited is briefly in neither the process list nor the postmaster's children_*
    # times (not reaped yet): read until two readings 0.2 s apart agree.
    last, deadline = -1.0, time.monotonic() + 5
    while True:
        total = _cpu_once(postmaster)
        if abs(total - last) < 0.005 or time.monotonic() > deadline:
            return total
        last = total
        time.sleep(0.2)


def _cpu_once(postmaster: psutil.Process) -> float:
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        total += child_times.user + child_times.system
    return total


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (0 when it does not exist); files vanishing meanwhile are skipped."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class DirSampler(_Poller):
    """Peak total size of the files under a directory (e.g. BACKUP_STAGE_DIR during a backup)."""

    def __init__(self, path: Path):
        super().__init__("dir-sampler")
        self.path = path
        self.peak = 0

    def sample(self) -> None:
        self.peak = max(self.peak, tree_size(self.path))
