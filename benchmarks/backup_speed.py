"""Backup speed and memory on pgbench data: bare pg_dump vs the seeds' script vs our Dagster job.

One run of this script loads `pgbench -i -s SCALE` into a throwaway PostgreSQL
(EphemeralPostgres, newest major by default), starts moto's S3 server on
127.0.0.1, and times three ways of dumping the same database:

  (a) bare     `pg_dump -Fc -Z0 > /dev/null`, with the pg_dump our job picks
               (`find_tools(server_major)`): the floor, what reading the
               database costs with no compression, hashing or network.
  (b) seeds    `pg_dump | gzip -6 > file.sql.gz` (plain SQL, the real gzip
               binary), then a plain boto3 `upload_file` to the S3 endpoint;
               timed together, as the seed scripts do it.
  (c) job      `python -m backup_pipeline.cli backup --json` in a subprocess:
               the real Dagster backup job, dump (zstd) -> upload -> verify
               (re-download and sha256), end to end including interpreter and
               Dagster start-up. Its process tree is polled every 50 ms for
               peak RSS (python process and pg_dump reported separately; the
               per-process peaks come from /proc/<pid>/status VmHWM).

How to read the ratios:

  (c)/(a)  overhead of the whole job over reading the database once with
           pg_dump. Target <= 1.3: compression, hashing, upload and verify
           together add at most 30 % to the bare dump.
  (b)/(c)  how much faster the job is than the seeds' script. Target >= 2.
  peak RSS of the job's process tree (python and all its children: pg_dump,
           pg_dumpall, Dagster's compute-log helpers), summed. Target < 200 MB
           and independent of the database size: run with `--scale 10` and
           `--scale 50` and compare; the python process should stay flat.

Both ratios use (c)'s wall time, which includes a fixed cost of a few seconds
(Python and Dagster start-up, interpreter exit) that does not grow with the
database, so they improve with --scale. The "(c) in-run only" rows use the
time between the run's first and last Dagster events instead, and the step
rows show where that time goes (dump / upload / verify). The job runs with a
fresh DAGSTER_HOME whose dagster.yaml only disables telemetry.

Absolute numbers depend on the machine and on moto (an in-memory S3 written in
Python, much slower than R2 or MinIO), so compare ratios, not seconds. moto
runs in its own process so that the (b) upload from this process does not
share a GIL with the server.

Usage: .venv/bin/python benchmarks/backup_speed.py [--scale 50] [--runs 1]
       [--compression-level 3] [--codec zstd] [--keep-going] [--strict]
Exit status: 0 (even when a target FAILs) unless --strict; 2 when a
measurement itself failed (e.g. the job did not complete).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil

from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.pgtools import PgTools, find_tools

# bench_common.py sits next to this file: importable however this script is started (any cwd, -m, -P).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402 - needs the sys.path entry above
    DBNAME, MB, MeasurementError, Row, attempt, clean_env, exit_status, fmt_ratio, fmt_seconds, log, machine_info,
    mb, pg_env, pgbench_database, pgbench_info, print_table, ratio_of, run_checked, timed, verdict
)
from proc_sampler import vm_hwm  # noqa: E402

TARGET = "bench"
ACCESS_KEY_ID = "bench"
SECRET_ACCESS_KEY = "bench-secret-key"
REGION = "us-east-1"
POLL_SECONDS = 0.05

TARGETS = {"c_over_a": 1.3, "b_over_c": 2.0, "peak_rss_mb": 200.0}


# ---------------------------------------------------------------- results


@dataclass
class SeedsResult:
    seconds: float
    dump_seconds: float
    upload_seconds: float
    size: int


@dataclass
class JobResult:
    seconds: float
    size: int
    status: str
    verification: str
    python_peak: int
    pg_dump_peak: int
    tree_peak: int
    other_peaks: dict[str, int] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    run_seconds: float | None = None
    startup_seconds: float | None = None
    exit_seconds: float | None = None
    dump_seconds: float | None = None
    raw_size: int | None = None


@dataclass
class Measurements:
    bare: list[float] = field(default_factory=list)
    seeds: list[SeedsResult] = field(default_factory=list)
    job: list[JobResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- setup


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's ThreadedMotoServer on 127.0.0.1 in a child process; yields its endpoint URL."""
    code = (
        "import sys\n"
        "from moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
        "server.start()\n"
        "host, port = server.get_host_and_port()\n"
        "print(f'http://{host}:{port}', flush=True)\n"
        "sys.stdin.read()\n"  # runs until the parent closes our stdin
        "server.stop()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        endpoint = proc.stdout.readline().strip()
        if not endpoint.startswith("http://127.0.0.1:"):
            raise MeasurementError(f"moto server did not start (said {endpoint!r})")
        yield endpoint
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client with default settings, as the seeds would build it."""
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY_ID,
                        aws_secret_access_key=SECRET_ACCESS_KEY, region_name=REGION)


def empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object so moto's memory does not grow with --runs."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


# ---------------------------------------------------------------- (a) and (b)


def time_bare_dump(pg_dump: str, env: dict[str, str]) -> float:
    seconds, _ = timed(lambda: run_checked(
        [pg_dump, "-Fc", "-Z0"], "bare pg_dump", env=env, stdout=subprocess.DEVNULL))
    return seconds


def time_seeds_way(pg_dump: str, env: dict[str, str], work: Path, client: Any, bucket: str) -> SeedsResult:
    """pg_dump (plain SQL) | gzip -6 > file, then boto3 upload_file; the two timed together."""
    out = work / "seeds.sql.gz"
    script = 'set -o pipefail; "$1" | gzip -6 > "$2"'
    try:
        dump_s, _ = timed(lambda: run_checked(["bash", "-c", script, "seeds", pg_dump, str(out)],
                                              "pg_dump | gzip", env=env))
        upload_s, _ = timed(lambda: client.upload_file(str(out), bucket, "seeds/bench.sql.gz"))
        return SeedsResult(dump_s + upload_s, dump_s, upload_s, out.stat().st_size)
    finally:
        out.unlink(missing_ok=True)


# ---------------------------------------------------------------- (c)


class TreeSampler(threading.Thread):
    """Polls a process and its descendants for RSS.

    `peaks` maps a label ("python" for the root, else the executable, or the
    script for python children) to the peak of that label's summed memory;
    `counts` to the most processes seen at once under it; `tree_peak` is the
    peak of the whole tree's summed RSS (shared pages count once per process).
    """

    def __init__(self, pid: int):
        super().__init__(name="rss-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.peaks: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.tree_peak = 0
        self._labels: dict[int, str] = {pid: "python"}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(POLL_SECONDS)

    def label(self, proc: psutil.Process) -> str:
        if proc.pid not in self._labels:
            name = proc.name()
            if name.startswith("python"):
                args = proc.cmdline()
                script = next((a for a in args[1:] if not a.startswith("-")), "")
                name = f"python {Path(script).name}" if script else name
            self._labels[proc.pid] = name
        return self._labels[proc.pid]

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        by_label: dict[str, list[int]] = {}
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                label = self.label(proc)
            except psutil.Error:
                continue
            total += rss
            # VmHWM catches peaks between two polls; it is per process, so it is summed per label only.
            by_label.setdefault(label, []).append(max(rss, vm_hwm(proc.pid) or 0))
        for label, values in by_label.items():
            self.peaks[label] = max(self.peaks.get(label, 0), sum(values))
            self.counts[label] = max(self.counts.get(label, 0), len(values))
        self.tree_peak = max(self.tree_peak, total)

    def stop(self) -> None:
        self._done.set()
        self.join()


def write_job_config(home: Path, bucket_url: str, codec: str, level: int | None, drill: bool) -> dict[str, str]:
    """DAGSTER_HOME with telemetry off, and a targets file with the codec, level and drill setting."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {"DAGSTER_HOME": str(home), "BACKUP_HISTORY_URL": f"sqlite:///{home / 'h.sqlite'}",
           "BACKUP_TARGET": TARGET}
    targets = home / "backup_targets.yaml"
    lines = [f"storage: {bucket_url}", "targets:", f"  {TARGET}:", "    dsn_env: DATABASE_URL",
             f"    compression: {codec}", f"    drill: {'true' if drill else 'false'}"]
    if level is not None:
        lines.append(f"    compression_level: {level}")
    targets.write_text("\n".join(lines) + "\n")
    env["BACKUP_TARGETS_FILE"] = str(targets)
    return env


def step_timings(home: Path, run_id: str) -> tuple[dict[str, float], tuple[float, float] | None, dict[str, Any]]:
    """Per-step seconds, the run's first and last event times and the dump step's output metadata."""
    from dagster import DagsterInstance

    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    metadata: dict[str, Any] = {}
    first = last = None
    os.environ["DAGSTER_HOME"] = str(home)  # the instance's dagster.yaml reads its folders from it
    with DagsterInstance.from_config(str(home)) as instance:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None:
                continue
            first = entry.timestamp if first is None else first
            last = entry.timestamp
            kind = event.event_type_value
            if kind == "STEP_START":
                starts[entry.step_key] = entry.timestamp
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in starts:
                steps[entry.step_key] = entry.timestamp - starts[entry.step_key]
            elif kind == "STEP_OUTPUT" and entry.step_key == "dump":
                for key, value in event.step_output_data.metadata.items():
                    metadata[key] = getattr(value, "value", value)
    span = (first, last) if first is not None and last is not None else None
    return steps, span, metadata


def run_job(server: EphemeralPostgres, endpoint: str, bucket: str, work: Path,
            codec: str, level: int | None, drill: bool = False) -> JobResult:
    """The backup job via the CLI in a subprocess, its process tree sampled for RSS."""
    home = Path(tempfile.mkdtemp(prefix="dagster-home-", dir=work))
    bucket_url = f"s3://{bucket}/{TARGET}"
    env = {
        **clean_env(),
        **write_job_config(home, bucket_url, codec, level, drill),
        "DATABASE_URL": server.dsn(DBNAME),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_REGION": REGION,
    }
    cmd = [sys.executable, "-m", "backup_pipeline.cli", "backup", "--target", TARGET,
           "--storage", bucket_url, "--json"]
    try:
        with open(home / "stdout", "w+b") as out, open(home / "stderr", "w+b") as err:
            start, started_at = time.perf_counter(), time.time()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(home))
            sampler = TreeSampler(proc.pid)
            sampler.start()
            try:
                returncode = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                sampler.stop()
            seconds, ended_at = time.perf_counter() - start, time.time()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        return _job_result(home, returncode, stdout, stderr, (started_at, seconds, ended_at), sampler)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _job_result(home: Path, returncode: int, stdout: str, stderr: str, wall: tuple[float, float, float],
                sampler: TreeSampler) -> JobResult:
    """Check the CLI's outcome and combine it with the event log and the RSS samples."""
    started_at, seconds, ended_at = wall
    try:
        record = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        record = {}
    status = record.get("status", "?")
    if returncode != 0 or status != "completed":
        raise MeasurementError(f"backup job exited {returncode}, status {status!r}: {stderr.strip()[-1500:]}")
    steps, span, metadata = step_timings(home, record["dagster_run_id"])
    return JobResult(
        seconds=seconds,
        size=int(record["size_bytes"]),
        status=status,
        verification=record.get("verification_status", "?"),
        python_peak=sampler.peaks.get("python", 0),
        pg_dump_peak=sampler.peaks.get("pg_dump", 0),
        tree_peak=sampler.tree_peak,
        other_peaks={f"{k} x{sampler.counts[k]}" if sampler.counts[k] > 1 else k: v
                     for k, v in sampler.peaks.items() if k not in ("python", "pg_dump")},
        steps=steps,
        run_seconds=span[1] - span[0] if span else None,
        startup_seconds=span[0] - started_at if span else None,
        exit_seconds=ended_at - span[1] if span else None,
        dump_seconds=metadata.get("dump_seconds"),
        raw_size=metadata.get("uncompressed_bytes"),
    )


# ---------------------------------------------------------------- report


@dataclass
class Summary:
    """Best-of-N timings and max-of-N memory over all runs."""

    bare: float | None
    seeds: SeedsResult | None
    job: JobResult | None
    job_in_run: float | None
    tree_peak: int | None
    python_peak: int | None
    pg_dump_peak: int | None
    other_peaks: dict[str, int]

    @classmethod
    def of(cls, m: Measurements) -> "Summary":
        others: dict[str, int] = {}
        for job in m.job:
            for name, peak in job.other_peaks.items():
                others[name] = max(others.get(name, 0), peak)
        in_run = [j.run_seconds for j in m.job if j.run_seconds is not None]
        return cls(
            bare=min(m.bare, default=None),
            seeds=min(m.seeds, key=lambda r: r.seconds, default=None),
            job=min(m.job, key=lambda r: r.seconds, default=None),
            job_in_run=min(in_run, default=None),
            tree_peak=max((j.tree_peak for j in m.job), default=None),
            python_peak=max((j.python_peak for j in m.job), default=None),
            pg_dump_peak=max((j.pg_dump_peak for j in m.job), default=None),
            other_peaks=others,
        )


def _timing_rows(args: argparse.Namespace, s: Summary) -> list[Row]:
    level = args.compression_level if args.compression_level is not None else "default"
    rows: list[Row] = [
        ("(a) pg_dump -Fc -Z0 > /dev/null", fmt_seconds(s.bare), "", ""),
        ("(b) seeds: pg_dump | gzip -6, boto3 upload", fmt_seconds(s.seeds and s.seeds.seconds), "", ""),
    ]
    if s.seeds:
        rows.append(("      dump+gzip / upload", f"{s.seeds.dump_seconds:.2f} / {s.seeds.upload_seconds:.2f} s", "", ""))
    rows.append((f"(c) backup job ({args.codec}, level {level}), wall", fmt_seconds(s.job and s.job.seconds), "", ""))
    job = s.job
    if job:
        rows.append(("      status / verification", f"{job.status} / {job.verification}", "", ""))
        steps = " / ".join(f"{job.steps.get(step, float('nan')):.2f}" for step in ("dump", "upload", "verify"))
        rows.append(("      steps dump / upload / verify", f"{steps} s", "", ""))
        if job.run_seconds is not None:
            rows.append(("      process start / in-run / exit",
                         f"{job.startup_seconds:.2f} / {job.run_seconds:.2f} / {job.exit_seconds:.2f} s", "", ""))
        if job.dump_seconds is not None:
            rows.append(("      dump_database() alone", f"{job.dump_seconds:.2f} s", "", ""))
    return rows


def _size_rows(args: argparse.Namespace, s: Summary) -> list[Row]:
    return [
        ("(b) .sql.gz size", mb(s.seeds.size) if s.seeds else "-", "", ""),
        (f"(c) archive size ({args.codec})", mb(s.job.size) if s.job else "-", "", ""),
        ("    pg_dump -Fc output (uncompressed)", mb(s.job.raw_size) if s.job else "-", "", ""),
    ]


def _target_rows(s: Summary) -> tuple[list[Row], bool]:
    """Ratio and memory rows with PASS/FAIL; also whether no target FAILed."""
    c_over_a = ratio_of(s.job and s.job.seconds, s.bare)
    b_over_c = ratio_of(s.seeds and s.seeds.seconds, s.job and s.job.seconds)
    checks = [
        None if c_over_a is None else c_over_a <= TARGETS["c_over_a"],
        None if b_over_c is None else b_over_c >= TARGETS["b_over_c"],
        None if s.tree_peak is None else s.tree_peak / MB < TARGETS["peak_rss_mb"],
    ]
    rows: list[Row] = [
        ("(c)/(a) time", fmt_ratio(c_over_a), f"<= {TARGETS['c_over_a']}", verdict(checks[0])),
        ("(b)/(c) time", fmt_ratio(b_over_c), f">= {TARGETS['b_over_c']}", verdict(checks[1])),
        ("(c)/(a), (c) in-run only (info)", fmt_ratio(ratio_of(s.job_in_run, s.bare)), "", ""),
        ("(b)/(c), (c) in-run only (info)", fmt_ratio(ratio_of(s.seeds and s.seeds.seconds, s.job_in_run)), "", ""),
        ("(c) peak RSS, python + children (sum)", mb(s.tree_peak), f"< {TARGETS['peak_rss_mb']:.0f} MB",
         verdict(checks[2])),
        ("      python process peak", mb(s.python_peak), "", ""),
        ("      pg_dump peak", mb(s.pg_dump_peak), "", ""),
    ]
    rows += [(f"      {name} peak", mb(peak), "", "") for name, peak in sorted(s.other_peaks.items())]
    return rows, all(ok is not False for ok in checks)


def report(args: argparse.Namespace, info: dict[str, str], m: Measurements) -> bool:
    """Print the result table; returns True when no target FAILed."""
    summary = Summary.of(m)
    target_rows, passed = _target_rows(summary)
    print_table(info, _timing_rows(args, summary) + _size_rows(args, summary) + target_rows)
    for what, error in m.errors.items():
        print(f"\nERROR in {what}: {error}")
    print("\nPeak RSS should not grow with --scale: compare a --scale 10 run with a --scale 50 run.")
    return passed


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale factor (50 is about 750 MB)")
    parser.add_argument("--runs", type=int, default=1, help="repeat each timing N times and keep the best")
    parser.add_argument("--compression-level", type=int, default=None,
                        help="the job's compression level (default: the product default, zstd 3)")
    parser.add_argument("--codec", choices=("zstd", "gzip", "none"), default="zstd", help="the job's codec")
    parser.add_argument("--drill", action="store_true",
                        help="include the restore drill in (c) (off: dump, upload, checksum verify; "
                             "drill_speed.py measures the drill)")
    parser.add_argument("--pg-major", type=int, default=None, help="server major (default: newest available)")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed measurement, go on with the others instead of stopping")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    args = parser.parse_args(argv)
    if args.scale < 1 or args.runs < 1:
        parser.error("--scale and --runs must be at least 1")
    return args


def measure(args: argparse.Namespace, server: EphemeralPostgres, endpoint: str, work: Path,
            m: Measurements) -> PgTools:
    tools = find_tools(server.major)
    pg_dump = tools.path("pg_dump")
    env = pg_env(server)
    client = s3_client(endpoint)
    bucket = f"bench-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    for run in range(1, args.runs + 1):
        tag = f"run {run}/{args.runs}"
        s = attempt(m.errors, "(a) bare pg_dump", args.keep_going, lambda: time_bare_dump(pg_dump, env))
        if s is not None:
            m.bare.append(s)
            log(f"{tag} (a) bare pg_dump: {s:.2f} s")
        seeds = attempt(m.errors, "(b) seeds", args.keep_going,
                        lambda: time_seeds_way(pg_dump, env, work, client, bucket))
        if seeds is not None:
            m.seeds.append(seeds)
            log(f"{tag} (b) seeds: {seeds.seconds:.2f} s ({mb(seeds.size)})")
        job = attempt(m.errors, "(c) backup job", args.keep_going,
                      lambda: run_job(server, endpoint, bucket, work, args.codec, args.compression_level, args.drill))
        if job is not None:
            m.job.append(job)
            log(f"{tag} (c) job: {job.seconds:.2f} s ({mb(job.size)}), peak RSS {mb(job.tree_peak)}")
        empty_bucket(client, bucket)
    return tools


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m = Measurements()
    with pgbench_database(args.pg_major, args.scale, "backup-bench-") as (server, work, load_s, db_size):
        load_before = os.getloadavg()[0]
        with moto_server() as endpoint:
            log(f"moto S3 at {endpoint}")
            tools = measure(args, server, endpoint, work, m)
        load_after = os.getloadavg()[0]
        info = {
            "server": f"PostgreSQL {server.version} on 127.0.0.1:{server.port}",
            "pg_dump": f"{tools.version} ({tools.origin}) {tools.bin_dir}",
            "pgbench scale": pgbench_info(args.scale, load_s, db_size),
            "runs": f"{args.runs} (best of each timing; peak RSS is the max over runs)",
            "machine": machine_info(load_before, load_after),
        }
        passed = report(args, info, m)
    return exit_status(m.errors, args.strict, passed)


if __name__ == "__main__":
    sys.exit(main())
