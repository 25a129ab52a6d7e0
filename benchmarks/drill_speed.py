"""Restore-drill speed on pgbench data: a bare hand restore vs the product's drill.

One run of this script loads `pgbench -i -s SCALE` into a throwaway PostgreSQL
(EphemeralPostgres, newest major by default), makes one backup with the
product's own code (`dump_database` -> `build_manifest` -> `publish` to a
`file://` storage in a temp dir, zstd level 3 as the job does), stops that
server, and then times, interleaved (the order alternates every run), two ways
of proving that backup restores:

  (a) bare     what a user would do by hand with the same archive: decompress
               the stored `.dump.zst` to a plain custom-format file (the zstd
               CLI when installed, else python-zstandard), start a fresh
               EphemeralPostgres of the same major, createdb, `pg_restore
               --jobs=N -d db plain.dump` with the pg_restore the drill uses
               (`find_tools(major)`), stop the server, delete the plain file.
               "bare total" is the sum of those steps.
  (b) drill    `drill_backup(storage, manifest_key, stage_dir=..., jobs=N)`,
               wall time in this process; it also downloads (copies) the
               archive, checks its sha256, lists the TOC for --use-list,
               creates roles, compares row counts and the catalog inventory
               with the manifest, and stops/deletes its server.

How to read the ratios:

  drill wall / bare total   overhead of everything the drill proves beyond
                            "it restores". Target <= 1.2.
  drill restore_seconds / bare pg_restore
                            the pg_restore inside the drill vs the bare one:
                            should be ~1.0 (same binary, same archive, same
                            --jobs); information only.

The per-step breakdown of the drill is measured by wrapping, for the duration
of the drill call only, the functions drill.py calls (storage reads,
sha256_of, decompress_stream, EphemeralPostgres start/createdb/stop,
create_missing_roles, subprocess.run for `pg_restore -l` and `pg_restore`,
compare_with_manifest and the row counting inside it, run_assertions) with
timestamps; the product code is not changed and the wrappers cost
microseconds. Whatever is not covered (connections, the extension list, the
TOC filter, pg_database_size) shows up as "other". If drill.py stops calling
one of these names, that step is reported as not measured and lands in "other".

Absolute numbers depend on the machine and on what else runs on it (the
header shows the load average); compare ratios and use --runs 3.

Usage: .venv/bin/python benchmarks/drill_speed.py [--scale 50] [--runs 1]
       [--jobs 2] [--pg-major N] [--decompressor auto|cli|python]
       [--keep-going] [--strict]
Exit status: 0 (even when a target FAILs) unless --strict; 2 when a
measurement itself failed, including a drill that did not pass.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import zstandard

from backup_pipeline.core import drill as drill_module
from backup_pipeline.core import verify as verify_module
from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import build_manifest, publish
from backup_pipeline.core.drill import DrillResult, drill_backup
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.pgtools import PgTools, find_tools
from backup_pipeline.core.storage import Storage, open_storage

# bench_common.py sits next to this file: importable however this script is started (any cwd, -m, -P).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402 - needs the sys.path entry above
    DBNAME, MB, MeasurementError, Row, attempt, clean_env, exit_status, fmt_ratio, fmt_seconds, log, machine_info,
    mb, pgbench_database, pgbench_info, print_table, ratio_of, run_checked, timed, verdict
)

TARGET = "bench"
RESTORE_DB = "restored"
COMPRESSION_LEVEL = 3  # the product default

TARGETS = {"drill_over_bare": 1.2}


# ---------------------------------------------------------------- results


@dataclass
class BareResult:
    decompress: float
    start: float
    createdb: float
    restore: float
    stop: float
    cleanup: float

    @property
    def total(self) -> float:
        return self.decompress + self.start + self.createdb + self.restore + self.stop + self.cleanup


@dataclass
class DrillRun:
    wall: float
    result: DrillResult
    phases: dict[str, float]
    cleanup: float | None
    not_measured: list[str]

    @property
    def restore(self) -> float | None:
        return self.result.restore_seconds


@dataclass
class Backup:
    storage: Storage
    names: BackupNames
    archive_path: Path
    archive_size: int
    raw_size: int
    dump_seconds: float
    server_major: int


@dataclass
class Measurements:
    bare: list[BareResult] = field(default_factory=list)
    drill: list[DrillRun] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- setup


def make_backup(server: EphemeralPostgres, work: Path) -> Backup:
    """One backup with the product's code: dump_database -> build_manifest -> publish to file:// storage."""
    storage_dir = work / "storage"
    storage_dir.mkdir()
    storage = open_storage(storage_dir.as_uri())
    storage.check()
    names = BackupNames.for_backup(TARGET, datetime.now(UTC), "zstd")
    stage = work / "backup-stage"
    try:
        dump_s, dump = timed(lambda: dump_database(server.dsn(DBNAME), stage, names, level=COMPRESSION_LEVEL))
        manifest = build_manifest(backup_id=uuid.uuid4().hex, target=TARGET, backup_type="manual", names=names,
                                  dump=dump, dagster_run_id=None)
        publish(storage, names, dump, manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    archive_path = storage_dir / names.archive
    if archive_path.stat().st_size != dump.archive_size:
        raise MeasurementError(f"published archive {archive_path} has an unexpected size")
    log(f"backup: dump_database {dump_s:.1f} s, archive {mb(dump.archive_size)} "
        f"(pg_dump -Fc output {mb(dump.raw_size)}), {len(dump.row_counts)} tables, roles file "
        f"{'yes' if dump.globals_path else 'no'}")
    return Backup(storage=storage, names=names, archive_path=archive_path, archive_size=dump.archive_size,
                  raw_size=dump.raw_size, dump_seconds=dump_s, server_major=server.major)


# ---------------------------------------------------------------- (a) bare


def pick_decompressor(choice: str) -> tuple[str, Callable[[Path, Path], None]]:
    """(description, function(src, dst)) for the bare decompression."""
    cli = shutil.which("zstd")
    if choice == "cli" and not cli:
        raise SystemExit("--decompressor cli: no zstd binary on PATH")
    if cli and choice in ("auto", "cli"):
        version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout.strip(" *\n")

        def with_cli(src: Path, dst: Path) -> None:
            run_checked([cli, "-d", "-q", "-f", str(src), "-o", str(dst)], "zstd -d", env=clean_env())

        return f"{cli} -d ({version})", with_cli

    def with_python(src: Path, dst: Path) -> None:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=MB, write_size=MB)

    return f"python-zstandard {zstandard.__version__} copy_stream", with_python


def run_bare(backup: Backup, pg_restore: str, work: Path, jobs: int, scale: int,
             decompress: Callable[[Path, Path], None]) -> BareResult:
    """Decompress, start a server, createdb, pg_restore -j N, stop, delete the plain file; each step timed."""
    plain = work / "bare-plain.dump"
    try:
        decompress_s, _ = timed(lambda: decompress(backup.archive_path, plain))
        server = EphemeralPostgres(backup.server_major)
        stop_s = None
        try:
            start_s, _ = timed(server.start)
            createdb_s, dsn = timed(lambda: server.create_database(RESTORE_DB))
            restore_s, _ = timed(lambda: run_checked(
                [pg_restore, "--no-password", f"--jobs={jobs}", f"--dbname={server.dsn(RESTORE_DB, password='')}",
                 str(plain)], "bare pg_restore", env={**clean_env(), "PGPASSWORD": server.password}))
            # Untimed sanity check that the data is really there.
            with psycopg.connect(dsn) as conn:
                branches = conn.execute("SELECT count(*) FROM pgbench_branches").fetchone()[0]
            if branches != scale:
                raise MeasurementError(f"bare restore has {branches} pgbench_branches rows, expected {scale}")
            stop_s, _ = timed(server.stop)
        finally:
            if stop_s is None:
                server.stop()
        cleanup_s, _ = timed(plain.unlink)
    finally:
        plain.unlink(missing_ok=True)
    return BareResult(decompress=decompress_s, start=start_s, createdb=createdb_s, restore=restore_s,
                      stop=stop_s, cleanup=cleanup_s)


# ---------------------------------------------------------------- (b) drill


class DrillProbe:
    """Per-step timestamps of one drill_backup() call, by wrapping the names drill.py calls.

    Nothing in the product changes: the wrappers are installed with
    mock.patch.object for the duration of the call and only add up the time
    spent in each wrapped function.
    """

    def __init__(self) -> None:
        self.phases: dict[str, float] = defaultdict(float)
        self.not_measured: list[str] = []
        self.stop_end: float | None = None

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] += time.perf_counter() - start

    def _wrap(self, fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.timing(phase):
                return fn(*args, **kwargs)

        return wrapper

    def _server_class(self) -> type:
        probe = self

        class TimedServer(drill_module.EphemeralPostgres):  # type: ignore[misc,name-defined]
            def start(self):  # noqa: ANN201
                with probe.timing("server start"):
                    return super().start()

            def create_database(self, name: str) -> str:
                with probe.timing("createdb"):
                    return super().create_database(name)

            def stop(self) -> None:
                was_started = self.root is not None
                with probe.timing("server stop"):
                    super().stop()
                if was_started:
                    probe.stop_end = time.perf_counter()

        return TimedServer

    def _subprocess_shim(self) -> Any:
        probe = self

        class SubprocessShim:
            def __getattr__(self, name: str) -> Any:
                return getattr(subprocess, name)

            @staticmethod
            def run(args: Any, *rest: Any, **kwargs: Any) -> Any:
                exe = Path(str(args[0])).name if isinstance(args, (list, tuple)) and args else ""
                phase = "subprocess (other)"
                if exe == "pg_restore":
                    phase = "pg_restore -l" if "-l" in args else "pg_restore"
                with probe.timing(phase):
                    return subprocess.run(args, *rest, **kwargs)

        return SubprocessShim()

    @contextlib.contextmanager
    def installed(self, storage: Storage) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            def patch(obj: Any, name: str, phase: str | None = None, replacement: Any = None) -> None:
                if not hasattr(obj, name):
                    self.not_measured.append(phase or name)
                    return
                new = replacement if replacement is not None else self._wrap(getattr(obj, name), phase or name)
                stack.enter_context(mock.patch.object(obj, name, new))

            patch(storage, "get_bytes", "storage reads")
            patch(storage, "download_file", "download")
            patch(drill_module, "sha256_of", "sha256")
            patch(drill_module, "decompress_stream", "decompress")
            patch(drill_module, "EphemeralPostgres", "server start", self._server_class()
                  if hasattr(drill_module, "EphemeralPostgres") else None)
            patch(drill_module, "create_missing_roles", "roles")
            patch(drill_module, "subprocess", "pg_restore", self._subprocess_shim()
                  if hasattr(drill_module, "subprocess") else None)
            patch(drill_module, "compare_with_manifest", "compare")
            patch(verify_module, "count_rows", "row counts")  # called inside compare_with_manifest
            patch(drill_module, "run_assertions", "assertions")
            yield


def run_drill(backup: Backup, work: Path, jobs: int) -> DrillRun:
    stage = work / "drill-stage"
    probe = DrillProbe()
    try:
        with probe.installed(backup.storage):
            start = time.perf_counter()
            result = drill_backup(backup.storage, backup.names.manifest, stage_dir=stage, jobs=jobs)
            end = time.perf_counter()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not result.passed:
        raise MeasurementError(f"the drill did not pass: {result.reason}")
    cleanup = end - probe.stop_end if probe.stop_end is not None else None
    return DrillRun(wall=end - start, result=result, phases=dict(probe.phases), cleanup=cleanup,
                    not_measured=probe.not_measured)


# ---------------------------------------------------------------- report


@dataclass
class Summary:
    """Best-of-N timings over all runs."""

    bare: BareResult | None
    drill: DrillRun | None
    bare_restore: float | None
    drill_restore: float | None
    # Medians: with few runs a single lucky (or unlucky) run moves the best-of ratio; these show it.
    median_bare_total: float | None
    median_drill_wall: float | None
    median_bare_restore: float | None
    median_drill_restore: float | None

    @classmethod
    def of(cls, m: Measurements) -> "Summary":
        restores = [d.restore for d in m.drill if d.restore is not None]
        return cls(
            bare=min(m.bare, key=lambda r: r.total, default=None),
            drill=min(m.drill, key=lambda r: r.wall, default=None),
            bare_restore=min((b.restore for b in m.bare), default=None),
            drill_restore=min(restores, default=None),
            median_bare_total=_median([b.total for b in m.bare]),
            median_drill_wall=_median([d.wall for d in m.drill]),
            median_bare_restore=_median([b.restore for b in m.bare]),
            median_drill_restore=_median(restores),
        )


def _main_rows(args: argparse.Namespace, s: Summary) -> tuple[list[Row], bool]:
    bare, drill = s.bare, s.drill
    rows: list[Row] = [
        ("(a) bare: decompress to plain .dump", fmt_seconds(bare and bare.decompress), "", ""),
        (f"(a) bare: pg_restore --jobs={args.jobs}", fmt_seconds(s.bare_restore), "", ""),
        ("(a) bare total (decompress+start+createdb+restore+stop+rm)", fmt_seconds(bare and bare.total), "", ""),
        ("(b) drill_backup() wall", fmt_seconds(drill and drill.wall), "", ""),
        ("(b) drill restore_seconds (its pg_restore)", fmt_seconds(s.drill_restore), "", ""),
    ]
    if drill:
        rows.append(("      drill passed / server", f"{drill.result.passed} / {drill.result.server_version}", "", ""))
        rows.append(("      restored database size", mb(drill.result.restored_bytes), "", ""))
    ratio = ratio_of(drill and drill.wall, bare and bare.total)
    ok = None if ratio is None else ratio <= TARGETS["drill_over_bare"]
    rows += [
        ("drill wall / bare total", fmt_ratio(ratio), f"<= {TARGETS['drill_over_bare']}", verdict(ok)),
        ("drill restore_seconds / bare pg_restore (info)",
         fmt_ratio(ratio_of(s.drill_restore, s.bare_restore)), "", ""),
        ("drill wall - bare total", fmt_seconds(drill.wall - bare.total) if drill and bare else "-", "", ""),
    ]
    if args.runs > 1:
        rows += [
            ("median of runs: bare total / drill wall",
             f"{_cell(s.median_bare_total)} / {_cell(s.median_drill_wall)} s", "", ""),
            ("median of runs: bare / drill pg_restore",
             f"{_cell(s.median_bare_restore)} / {_cell(s.median_drill_restore)} s", "", ""),
            ("median drill wall / median bare total (info)",
             fmt_ratio(ratio_of(s.median_drill_wall, s.median_bare_total)), "", ""),
            ("median drill / median bare pg_restore (info)",
             fmt_ratio(ratio_of(s.median_drill_restore, s.median_bare_restore)), "", ""),
        ]
    return rows, ok is not False


# (label, drill phase key, bare attribute)
_BREAKDOWN: list[tuple[str, str | None, str | None]] = [
    ("read manifest + roles file from storage", "storage reads", None),
    ("download (copy + fsync) archive to stage", "download", None),
    ("sha256 of the archive", "sha256", None),
    ("decompress to plain .dump", "decompress", "decompress"),
    ("server start (initdb + pg_ctl start)", "server start", "start"),
    ("createdb", "createdb", "createdb"),
    ("create roles from roles file", "roles", None),
    ("pg_restore -l (TOC for --use-list)", "pg_restore -l", None),
    ("pg_restore --jobs=N", "pg_restore", "restore"),
    ("compare: row counts (count(*) per table)", "row counts", None),
    ("compare: inventory, sequences, extensions", "compare-inventory", None),
    ("assertions", "assertions", None),
    ("server stop (immediate) + rm data dir", "server stop", "stop"),
    ("rm temp dir / plain .dump", "cleanup", "cleanup"),
    ("other subprocesses called by drill.py", "subprocess (other)", None),
    ("other (connections, extension list, TOC filter, db size)", "other", None),
]


def drill_breakdown(run: DrillRun) -> dict[str, float | None]:
    """The drill's steps, with derived rows: inventory = compare - row counts; other = the rest of the wall."""
    phases = dict(run.phases)
    out: dict[str, float | None] = {key: phases.get(key, 0.0) for _, key, _ in _BREAKDOWN if key}
    compare = phases.get("compare", 0.0)
    counts = phases.get("row counts", 0.0)
    out["compare-inventory"] = compare - counts if "compare" in phases else 0.0
    out["cleanup"] = run.cleanup
    out["subprocess (other)"] = phases.get("subprocess (other)", 0.0)
    accounted = sum(v for k, v in phases.items() if k != "row counts") + (run.cleanup or 0.0)
    out["other"] = run.wall - accounted
    return out


def print_breakdown(args: argparse.Namespace, s: Summary) -> None:
    if not s.drill:
        return
    drill = drill_breakdown(s.drill)
    bare = s.bare
    width = max(len(label) for label, _, _ in _BREAKDOWN)
    print(f"\nWhere the time goes (best drill run vs best bare run, --jobs={args.jobs}):")
    print(f"{'step':<{width}}  {'bare':>8}  {'drill':>8}  {'drill-bare':>10}  {'% of drill':>10}")
    print("-" * (width + 46))
    for label, key, attr in _BREAKDOWN:
        d = drill.get(key) if key else None
        b = getattr(bare, attr) if bare and attr else None
        if key == "subprocess (other)" and not d:
            continue
        diff = (d or 0.0) - (b or 0.0) if d is not None or b is not None else None
        share = f"{100 * d / s.drill.wall:.0f} %" if d is not None else "-"
        print(f"{label:<{width}}  {_cell(b):>8}  {_cell(d):>8}  {_cell(diff, signed=True):>10}  {share:>10}")
    print("-" * (width + 46))
    total_b = bare.total if bare else None
    print(f"{'total':<{width}}  {_cell(total_b):>8}  {_cell(s.drill.wall):>8}  "
          f"{_cell(s.drill.wall - total_b if total_b else None, signed=True):>10}  {'100 %':>10}")
    if s.drill.not_measured:
        print(f"not measured (drill.py no longer calls them; counted in other): {', '.join(s.drill.not_measured)}")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def report(args: argparse.Namespace, info: dict[str, str], m: Measurements) -> bool:
    """Print the result table and the breakdown; returns True when no target FAILed."""
    summary = Summary.of(m)
    rows, passed = _main_rows(args, summary)
    print_table(info, rows)
    print_breakdown(args, summary)
    if summary.drill:
        print(f"\ndrill reason: {summary.drill.result.reason}")
    if len(m.bare) > 1 or len(m.drill) > 1:
        print("all runs, bare total: " + ", ".join(f"{b.total:.2f}" for b in m.bare)
              + " s; drill wall: " + ", ".join(f"{d.wall:.2f}" for d in m.drill) + " s")
    for what, error in m.errors.items():
        print(f"\nERROR in {what}: {error}")
    return passed


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale factor (50 is about 750 MB)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each timing N times (interleaved), keep the best")
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore --jobs for both the bare restore and the drill")
    parser.add_argument("--pg-major", type=int, default=None, help="server major (default: newest available)")
    parser.add_argument("--decompressor", choices=("auto", "cli", "python"), default="auto",
                        help="bare decompression: the zstd CLI (auto: when installed) or python-zstandard")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed measurement, go on with the others instead of stopping")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    args = parser.parse_args(argv)
    if args.scale < 1 or args.runs < 1 or args.jobs < 1:
        parser.error("--scale, --runs and --jobs must be at least 1")
    return args


def measure(args: argparse.Namespace, backup: Backup, tools: PgTools, work: Path,
            decompress: Callable[[Path, Path], None], m: Measurements) -> None:
    pg_restore = tools.path("pg_restore")

    def bare(tag: str) -> None:
        b = attempt(m.errors, "(a) bare restore", args.keep_going,
                    lambda: run_bare(backup, pg_restore, work, args.jobs, args.scale, decompress))
        if b is not None:
            m.bare.append(b)
            log(f"{tag} (a) bare: total {b.total:.2f} s (decompress {b.decompress:.2f}, start {b.start:.2f}, "
                f"pg_restore {b.restore:.2f}, stop {b.stop:.2f})")

    def drill(tag: str) -> None:
        d = attempt(m.errors, "(b) drill", args.keep_going, lambda: run_drill(backup, work, args.jobs))
        if d is not None:
            m.drill.append(d)
            log(f"{tag} (b) drill: wall {d.wall:.2f} s, restore_seconds {d.restore:.2f} s, passed {d.result.passed}")

    for run in range(1, args.runs + 1):
        tag = f"run {run}/{args.runs}"
        order = (bare, drill) if run % 2 else (drill, bare)
        for step in order:
            step(tag)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m = Measurements()
    decompressor, decompress = pick_decompressor(args.decompressor)
    with pgbench_database(args.pg_major, args.scale, "drill-bench-") as (server, work, load_s, db_size):
        backup = make_backup(server, work)
        server.stop()  # not needed any more; its memory and checkpoints would only add noise
        tools = find_tools(backup.server_major)
        load_before = os.getloadavg()[0]
        measure(args, backup, tools, work, decompress, m)
        load_after = os.getloadavg()[0]
        info = {
            "server": f"PostgreSQL {server.version} ({server.tools.origin}), 127.0.0.1",
            "pg_restore": f"{tools.version} ({tools.origin}) {tools.bin_dir}",
            "pgbench scale": pgbench_info(args.scale, load_s, db_size),
            "backup": f"dump_database {backup.dump_seconds:.1f} s, zstd level {COMPRESSION_LEVEL} archive "
                      f"{mb(backup.archive_size)}, plain .dump {mb(backup.raw_size)}",
            "bare unzstd": decompressor,
            "runs": f"{args.runs}, interleaved, order alternating (best of each timing), --jobs={args.jobs}",
            "machine": machine_info(load_before, load_after),
        }
        passed = report(args, info, m)
    return exit_status(m.errors, args.strict, passed)


if __name__ == "__main__":
    sys.exit(main())
