"""Five ways to back up one application-shaped database, side by side: time, peak memory, stage disk, start-up.

One run loads `appdata.py` data (customers/orders/order_items/events, which
compress ~4:1 like real application data, unlike pgbench's ~100:1) into a
throwaway PostgreSQL and measures, in interleaved rounds (the order rotates
each round), all on 127.0.0.1:

  (a) bare      `pg_dump -Fc -Z0 > /dev/null`, the pg_dump our job picks: the floor.
  (b) seed 003  `pg_dump -Fc -f file` (gzip, pg_dump's default) then a copy of
                the file to the store (`cp` to the local store; with --s3 a
                python+boto3 `upload_file`, as `aws s3 cp` would).
  (c) ours      `backup-pipeline backup --target T --json` (the installed CLI,
                so interpreter and Dagster start-up count) with `drill: false`:
                dump, compress, upload, checksum verify.
  (d) seed 000  `createdb`, `pg_dump | psql` into that fresh database on a
                second, already running PostgreSQL (the seed's backup
                project), then `count(*)` of every table in both, compared.
  (e) ours      the same CLI with the default `drill: true`: dump, upload, then
                a restore drill into a throwaway PostgreSQL, verify.

Each way runs as one process tree, sampled every 50 ms (proc_sampler.py): peak
RSS is the largest sum of per-process peaks (VmHWM) at one moment; for (e) it
includes the drill's PostgreSQL server processes, for (d) not the second
server's (it is not in the tree; the seed's backup project runs elsewhere).
That sum counts shared memory (the drill server's shared buffers) once per
process, so peak PSS (shared pages divided among their sharers, from
smaps_rollup at each poll) is shown too, and the memory target (< 200 MB) is
checked on (c) and on (e) without the drill server's processes: ours must stay
bounded at any size, PostgreSQL's is what its settings give it.
CPU seconds (user + system of the whole tree, from wait4, plus what the two
servers spent meanwhile) are shown too: on a busy machine they vary much less
than wall time. For (c) and (e) BACKUP_STAGE_DIR is sampled for its peak
size. Their in-run time (first to last Dagster event) is shown next to the
wall time, and the start-up row says how long after exec the pg_dump process
appeared; a last probe run with `-X importtime` (PYTHONPROFILEIMPORTTIME) says
where the import part of that goes.

Targets: (c)/(a) <= 1.2 (compression, hashing, storage and verification add at
most 20 % to reading the database), (b)/(c) >= 2 (twice as fast as the seed's
gzip), (e)/(d) <= 1.0 (a full restore drill no slower than the seed's
unverified-format copy). Ratios use best-of wall times; medians are shown too.
The machine is shared: the header prints the load average.

Storage is a local folder by default; `--s3` puts moto's S3 server (its own
process) behind throttle_proxy.py, at `--s3-mbps` Mbit/s per direction when
given. Exit status: 0 unless --strict (1 when a target FAILs); 2 when a
measurement itself failed.

Usage: .venv/bin/python benchmarks/five_ways.py [--size-mb 250] [--rounds 2] [--s3 [--s3-mbps 50]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.pgtools import PgTools, find_tools

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import appdata  # noqa: E402 - needs the sys.path entry above
from bench_common import (  # noqa: E402
    DBNAME, MeasurementError, Row, attempt, clean_env, exit_status, fmt_ratio, log, machine_info, mb, pg_env,
    print_table, ratio_of, verdict
)
from proc_sampler import DirSampler, TreeSampler, postgres_cpu_seconds  # noqa: E402
from throttle_proxy import ThrottleProxy  # noqa: E402

WAYS = ("a", "b", "c", "d", "e")
TITLES = {
    "a": "(a) pg_dump -Fc -Z0 > /dev/null",
    "b": "(b) seed 003: pg_dump -Fc, copy to store",
    "c": "(c) backup-pipeline, drill: false",
    "d": "(d) seed 000: pg_dump | psql, count all",
    "e": "(e) backup-pipeline (with drill)",
}
TARGETS = {"c_over_a": 1.2, "b_over_c": 2.0, "e_over_d": 1.0}
RSS_LIMIT = 200 * 1024 * 1024
BUCKET = "bench"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret-key", "AWS_REGION": "us-east-1"}
CLI_TARGET = {"c": "bench_nodrill", "e": "bench_drill"}

_SEED_003 = r"""set -euo pipefail
"$PG_DUMP" -Fc -f "$OUT"
if [ -n "${BENCH_STORE:-}" ]; then cp "$OUT" "$BENCH_STORE/"; else "$PYTHON" -c "$UPLOAD" "$OUT"; fi
"""
_UPLOAD = ("import boto3, os, sys; boto3.client('s3').upload_file(sys.argv[1], os.environ['BENCH_BUCKET'], "
           "'seed003/' + os.path.basename(sys.argv[1]))")
# Seed 000's check: count every table in the source and in the copy; fail unless they agree.
COUNT_BOTH = r"""count() {
  "$PSQL" -X -At -v ON_ERROR_STOP=1 -p "$1" -d "$2" <<'SQL'
SELECT format('SELECT %L, count(*) FROM %I.%I', schemaname || '.' || tablename, schemaname, tablename)
FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 \gexec
SQL
}
src=$(count "$PGPORT" "$PGDATABASE")
dst=$(count "$DST_PORT" "$DST_DB")
[ -n "$src" ] && [ "$src" = "$dst" ] || { echo "row counts differ: $src / $dst" >&2; exit 1; }
"""
_SEED_000 = r"""set -euo pipefail
"$CREATEDB" -p "$DST_PORT" "$DST_DB"
"$PG_DUMP" | "$PSQL" -X -q -v ON_ERROR_STOP=1 -p "$DST_PORT" -d "$DST_DB" > /dev/null
""" + COUNT_BOTH


@dataclass
class Sample:
    seconds: float
    tree_peak: int
    peaks: dict[str, int]
    pss_peak: int | None = None  # shared memory counted once
    peak_without_servers: int | None = None  # tree_peak without PostgreSQL server processes (the drill's)
    stage_peak: int | None = None
    size: int | None = None
    in_run: float | None = None
    to_pg_dump: float | None = None  # seconds from exec to the pg_dump process
    starts: dict[str, float] = field(default_factory=dict)  # seconds from exec to each child name's first process
    steps: dict[str, float] = field(default_factory=dict)
    cpu: float | None = None  # CPU seconds of the tree plus the two servers' work meanwhile


@dataclass
class Bench:
    """Everything the ways share: servers, tools, storage, the CLI's environment."""

    args: argparse.Namespace
    work: Path
    source: EphemeralPostgres
    seed_server: EphemeralPostgres
    tools: PgTools
    storage_env: dict[str, str]  # AWS_* for --s3, else {}
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {w: [] for w in WAYS})
    errors: dict[str, str] = field(default_factory=dict)
    import_probe: dict[str, Any] | None = None
    round_no: int = 0

    @property
    def store(self) -> Path:
        return self.work / "store"

    @property
    def home(self) -> Path:
        return self.work / "dagster_home"

    @property
    def cli(self) -> str:
        return str(Path(sys.executable).parent / "backup-pipeline")


# ---------------------------------------------------------------- running one way


def run_sampled(cmd: list[str], env: dict[str, str], what: str, *, stage: Path | None = None,
                cwd: Path | None = None, stdout: int | None = None) -> tuple[Sample, str, str]:
    """Run cmd as a sampled process tree; returns its Sample (time and memory) and its stdout and stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        dirs = DirSampler(stage) if stage else None
        if dirs:
            dirs.start()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout if stdout is not None else out, stderr=err, env=env,
                                cwd=str(cwd) if cwd else None)
        try:
            tree = TreeSampler(proc.pid)
            tree.start()
            # wait4: the CPU time of the whole tree (every descendant that was waited for), not only the root's.
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = returncode = os.waitstatus_to_exitcode(status)
            tree.stop()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if dirs:
                dirs.stop()
        out.seek(0)
        err.seek(0)
        stdout_text, stderr_text = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if returncode != 0:
        tail = " ".join(line for line in stderr_text.splitlines() if not line.startswith("import time:"))[-1500:]
        raise MeasurementError(f"{what} exited with {returncode}: {tail}")
    sample = Sample(seconds, tree.tree_peak, dict(tree.peaks), tree.pss_peak, tree.peak_without,
                    dirs.peak if dirs else None,
                    to_pg_dump=tree.first_start.get("pg_dump"), starts=dict(tree.first_start),
                    cpu=usage.ru_utime + usage.ru_stime)
    return sample, stdout_text, stderr_text


def way_a(b: Bench) -> Sample:
    sample, _, _ = run_sampled([b.tools.path("pg_dump"), "-Fc", "-Z0"], pg_env(b.source), "bare pg_dump",
                               stdout=subprocess.DEVNULL)
    return sample


def way_b(b: Bench) -> Sample:
    out = b.work / f"seed003-r{b.round_no}.dump"
    env = {**pg_env(b.source), "PG_DUMP": b.tools.path("pg_dump"), "OUT": str(out)}
    if b.storage_env:
        env.update(b.storage_env, PYTHON=sys.executable, UPLOAD=_UPLOAD, BENCH_BUCKET=BUCKET)
    else:
        env["BENCH_STORE"] = str(b.store)
    try:
        sample, _, _ = run_sampled(["bash", "-c", _SEED_003], env, "seed 003's pg_dump -Fc and copy")
        sample.size = out.stat().st_size
        return sample
    finally:
        out.unlink(missing_ok=True)


def way_d(b: Bench) -> Sample:
    dst_db = f"fresh_r{b.round_no}"
    env = {**pg_env(b.source), "PG_DUMP": b.tools.path("pg_dump"), "PSQL": b.tools.path("psql"),
           "CREATEDB": b.tools.path("createdb"), "DST_PORT": str(b.seed_server.port), "DST_DB": dst_db}
    try:
        sample, _, _ = run_sampled(["bash", "-c", _SEED_000], env, "seed 000's pg_dump | psql and counts")
        return sample
    finally:
        with psycopg.connect(b.seed_server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dst_db}"')


def cli_env(b: Bench, way: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**clean_env(), **b.storage_env, "DAGSTER_HOME": str(b.home),
            "BACKUP_HISTORY_URL": f"sqlite:///{b.home / 'history.sqlite'}",
            "BACKUP_TARGETS_FILE": str(b.work / "backup_targets.yaml"),
            "BACKUP_STAGE_DIR": str(b.work / f"stage-{way}"), "DATABASE_URL": b.source.dsn(DBNAME), **(extra or {})}


def way_cli(b: Bench, way: str, extra_env: dict[str, str] | None = None) -> tuple[Sample, str]:
    from backup_speed import step_timings  # the Dagster event-log reader backup_speed.py uses

    stage = b.work / f"stage-{way}"
    cmd = [b.cli, "backup", "--target", CLI_TARGET[way], "--json"]
    sample, stdout, stderr = run_sampled(cmd, cli_env(b, way, extra_env), f"backup-pipeline ({way})", stage=stage,
                                         cwd=b.work)
    record = json.loads(stdout)
    expected = "verified" if way == "e" else None
    if record.get("status") != "completed" or (expected and record.get("verification_status") != expected):
        raise MeasurementError(f"backup-pipeline ({way}): status {record.get('status')!r}, "
                               f"verification {record.get('verification_status')!r}")
    sample.size = int(record["size_bytes"])
    steps, span, _ = step_timings(b.home, record["dagster_run_id"])
    sample.steps = steps
    sample.in_run = span[1] - span[0] if span else None
    return sample, stderr


def write_targets(b: Bench) -> None:
    storage = f"s3://{BUCKET}/pipeline" if b.storage_env else f"file://{b.store / 'pipeline'}"
    (b.work / "backup_targets.yaml").write_text(
        f"storage: {storage}\ntargets:\n"
        f"  {CLI_TARGET['c']}:\n    dsn_env: DATABASE_URL\n    drill: false\n"
        f"  {CLI_TARGET['e']}:\n    dsn_env: DATABASE_URL\n")
    b.home.mkdir()
    (b.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def empty_store(b: Bench) -> None:
    """Delete what the ways stored, so storage (moto keeps it in memory) does not grow over rounds."""
    if b.storage_env:
        import boto3

        client = boto3.client("s3", endpoint_url=b.storage_env["AWS_ENDPOINT_URL"], **_boto_keys())
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    else:
        shutil.rmtree(b.store, ignore_errors=True)
        b.store.mkdir()


def _boto_keys() -> dict[str, str]:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"], "region_name": S3_ENV["AWS_REGION"]}


def run_way(b: Bench, way: str) -> Sample:
    """One way, with the CPU time the source and seed 000's servers spent on it added to its tree's."""
    servers = (b.source.data_dir, b.seed_server.data_dir)
    before = sum(postgres_cpu_seconds(d) for d in servers)
    sample = {"a": way_a, "b": way_b, "d": way_d}[way](b) if way in "abd" else way_cli(b, way)[0]
    sample.cpu += sum(postgres_cpu_seconds(d) for d in servers) - before
    return sample


# ---------------------------------------------------------------- start-up


def parse_importtime(stderr: str) -> dict[str, Any]:
    """Total import time and the largest costs from PYTHONPROFILEIMPORTTIME output (microseconds -> seconds)."""
    total = 0
    by_package: dict[str, int] = {}
    top_level: list[tuple[int, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_part, cum_us, name = line[len("import time:"):].split("|", 2)
        level = (len(name) - len(name.lstrip()) - 1) // 2  # two spaces of indentation per nesting level
        name = name.strip()
        package = name.split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(self_part)
        if level == 0:
            total += int(cum_us)
            top_level.append((int(cum_us), name))
    return {"total": total / 1e6,
            "packages": sorted(((us / 1e6, p) for p, us in by_package.items()), reverse=True)[:10],
            "top_level": sorted(((us / 1e6, n) for us, n in top_level), reverse=True)[:8]}


def python_startup(b: Bench) -> dict[str, float]:
    """Wall seconds of a bare interpreter and of importing what `backup` imports, best of 3, no backup run."""
    env = cli_env(b, "c")
    codes = {"python -c pass": "pass",
             "import backup_pipeline.launch": "import backup_pipeline.cli, backup_pipeline.launch"}
    result = {}
    for label, code in codes.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
        result[label] = min(times)
    return result


def import_probe(b: Bench) -> dict[str, Any]:
    """One more (c) run with PYTHONPROFILEIMPORTTIME=1, for where the import part of start-up goes."""
    sample, stderr = way_cli(b, "c", {"PYTHONPROFILEIMPORTTIME": "1"})
    empty_store(b)
    probe = parse_importtime(stderr)
    probe["to_pg_dump"] = sample.to_pg_dump
    probe["interpreter"] = python_startup(b)
    return probe


# ---------------------------------------------------------------- report


def best(samples: list[Sample], attr: str = "seconds") -> float | None:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    return min(values) if values else None


def median(samples: list[Sample], attr: str = "seconds") -> float | None:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    return statistics.median(values) if values else None


def peak(samples: list[Sample], attr: str) -> int | None:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    return max(values) if values else None


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_ways(b: Bench) -> None:
    header = ("way", "best s", "median s", "in-run s", "CPU s", "peak RSS", "peak PSS", "stage peak", "stored")
    lines = [header]
    for way in WAYS:
        s = b.samples[way]
        lines.append((TITLES[way], _secs(best(s)) if s else "ERROR", _secs(median(s)), _secs(best(s, "in_run")),
                      _secs(best(s, "cpu")), mb(peak(s, "tree_peak")), mb(peak(s, "pss_peak")),
                      mb(peak(s, "stage_peak")), mb(peak(s, "size"))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))


def detail_rows(b: Bench) -> list[Row]:
    rows: list[Row] = []
    for way in ("c", "e"):
        samples = b.samples[way]
        if not samples:
            continue
        fastest = min(samples, key=lambda s: s.seconds)
        steps = " / ".join(f"{k} {v:.2f}" for k, v in fastest.steps.items())
        rows.append((f"{way}: steps of the fastest round (s)", steps, "", ""))
        by_name = {n: max(s.peaks.get(n, 0) for s in samples) for s0 in samples for n in s0.peaks}
        largest = sorted(by_name.items(), key=lambda item: -item[1])[:4]
        rows.append((f"{way}: peak RSS by process name", ", ".join(f"{n} {mb(v)}" for n, v in largest), "", ""))
    return rows


def ratio_rows(b: Bench) -> tuple[list[Row], bool]:
    s = b.samples
    pairs = {"c_over_a": ("c", "a"), "b_over_c": ("b", "c"), "e_over_d": ("e", "d")}
    rows: list[Row] = []
    passed = True
    for key, (top, bottom) in pairs.items():
        value = ratio_of(best(s[top]), best(s[bottom]))
        target = TARGETS[key]
        ok = None if value is None else (value >= target if key == "b_over_c" else value <= target)
        passed = passed and ok is not False
        median_value = ratio_of(median(s[top]), median(s[bottom]))
        rows.append((f"({top})/({bottom}) best (median {fmt_ratio(median_value)})", fmt_ratio(value),
                     f"{'>=' if key == 'b_over_c' else '<='} {target}", verdict(ok)))
    # Memory: ours must stay bounded whatever the size; the drill's server is PostgreSQL's (shared_buffers etc.).
    for way, attr, label in (("c", "tree_peak", "peak RSS"), ("e", "peak_without_servers", "peak RSS without drill server")):
        value = peak(s[way], attr)
        ok = None if value is None else value < RSS_LIMIT
        passed = passed and ok is not False
        rows.append((f"({way}) {label}", mb(value), f"< {mb(RSS_LIMIT)}", verdict(ok)))
    for top, bottom in (("c", "a"), ("e", "d")):
        rows.append((f"({top}) in-run / ({bottom}) (info)", fmt_ratio(ratio_of(best(s[top], "in_run"), best(s[bottom]))),
                     "", ""))
    for top, bottom in pairs.values():  # CPU seconds hardly depend on what else the machine runs
        rows.append((f"({top})/({bottom}) CPU seconds (info)", fmt_ratio(ratio_of(best(s[top], "cpu"),
                                                                             best(s[bottom], "cpu"))), "", ""))
    # The best ratio this machine allows for the same work: (top)'s CPU seconds spread over every core, all the
    # time, against (bottom)'s wall time. A floor above the target means only doing less work (or more cores) meets it.
    cores = os.cpu_count() or 1
    for key, (top, bottom) in pairs.items():
        if key == "b_over_c":
            continue
        cpu = best(s[top], "cpu")
        floor = ratio_of(None if cpu is None else cpu / cores, best(s[bottom]))
        rows.append((f"({top}) CPU s / {cores} cores / ({bottom}) wall: floor (info)", fmt_ratio(floor),
                     f"target {TARGETS[key]}", ""))
    return rows, passed


def startup_rows(b: Bench) -> list[Row]:
    rows: list[Row] = []
    for way in ("c", "e"):
        rows.append((f"({way}) exec -> pg_dump starts, best / median",
                     f"{_secs(best(b.samples[way], 'to_pg_dump'))} / {_secs(median(b.samples[way], 'to_pg_dump'))} s",
                     "", ""))
    if b.samples["c"]:
        fastest = min(b.samples["c"], key=lambda s: s.seconds)
        firsts = sorted((t, n) for n, t in fastest.starts.items() if t > 0.01)[:6]
        rows.append(("  (c) children's first start", ", ".join(f"{n} {t:.2f}" for t, n in firsts) + " s", "", ""))
    probe = b.import_probe
    if probe:
        for label, seconds in probe["interpreter"].items():
            rows.append((f"  wall of {label}", f"{seconds:.2f} s", "", ""))
        rows.append(("  imports (-X importtime, probe run)", f"{probe['total']:.2f} s", "", ""))
        rows += [(f"    {name}", f"{seconds:.2f} s self", "", "") for seconds, name in probe["packages"][:6]]
    return rows


# ---------------------------------------------------------------- main


@contextlib.contextmanager
def storage(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """{} for the local folder; for --s3, moto (own process) behind the throttling proxy, as AWS_* variables."""
    if not args.s3:
        yield {}
        return
    import boto3

    from backup_speed import moto_server

    with moto_server() as endpoint:
        port = int(endpoint.rsplit(":", 1)[1])
        with ThrottleProxy(port, args.s3_mbps) as proxy:
            boto3.client("s3", endpoint_url=endpoint, **_boto_keys()).create_bucket(Bucket=BUCKET)
            log(f"moto S3 at {endpoint}, through {proxy.url} at {args.s3_mbps or 'unlimited'} Mbit/s")
            yield {**S3_ENV, "AWS_ENDPOINT_URL": proxy.url}


def measure(b: Bench) -> None:
    write_targets(b)
    os.environ["DAGSTER_HOME"] = str(b.home)  # for reading the runs' event logs in this process (step_timings)
    empty_store(b)
    for n in range(b.args.rounds):
        b.round_no = n + 1
        order = WAYS[n % len(WAYS):] + WAYS[:n % len(WAYS)]
        for way in order:
            sample = attempt(b.errors, TITLES[way], b.args.keep_going, lambda w=way: run_way(b, w))
            empty_store(b)
            if sample is not None:
                b.samples[way].append(sample)
                log(f"round {b.round_no}/{b.args.rounds} {TITLES[way]}: {sample.seconds:.2f} s, "
                    f"peak RSS {mb(sample.tree_peak)}")
    if not b.args.no_probe:
        b.import_probe = attempt(b.errors, "import probe", b.args.keep_going, lambda: import_probe(b))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=250, help="application data size on disk (appdata.py)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all five ways")
    parser.add_argument("--s3", action="store_true", help="store on moto S3 behind the throttling proxy")
    parser.add_argument("--s3-mbps", type=float, default=None, help="with --s3: link speed in Mbit/s per direction")
    parser.add_argument("--pg-major", type=int, default=None, help="server major (default: newest available)")
    parser.add_argument("--no-probe", action="store_true", help="skip the -X importtime probe run")
    parser.add_argument("--keep-going", action="store_true", help="record a failed measurement and go on")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.size_mb <= 0:
        parser.error("--rounds must be at least 1 and --size-mb positive")
    if args.s3_mbps is not None and not args.s3:
        parser.error("--s3-mbps needs --s3")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="five-ways-"))
    source = EphemeralPostgres(args.pg_major)
    seed_server = EphemeralPostgres(args.pg_major, password=source.password)
    try:
        log(f"starting PostgreSQL {source.version} ({source.tools.origin}) twice: source and seed 000's backup project")
        source.start()
        seed_server.start()
        source.create_database(DBNAME)
        loaded = appdata.load(source.dsn(DBNAME), args.size_mb, log=log)
        with storage(args) as storage_env:
            b = Bench(args, work, source, seed_server, find_tools(source.major), storage_env)
            load_before = os.getloadavg()[0]
            measure(b)
            load_after = os.getloadavg()[0]
        info = {
            "server": f"PostgreSQL {source.version} on 127.0.0.1 (source :{source.port}, seed 000's :{seed_server.port})",
            "pg_dump": f"{b.tools.version} ({b.tools.origin})",
            "data": f"appdata {args.size_mb:g} MB asked: database {mb(loaded.size)}, "
                    f"{sum(loaded.rows.values())} rows, loaded in {loaded.seconds:.0f} s",
            "storage": (f"moto S3 via throttle_proxy, {args.s3_mbps or 'unlimited'} Mbit/s" if args.s3
                        else "local folder"),
            "rounds": f"{args.rounds}, interleaved (order rotates); best-of, median, peaks are max over rounds",
            "machine": machine_info(load_before, load_after),
        }
        info["load at end"] = "1/5/15-min " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
        for key, value in info.items():
            print(f"{key:>12}: {value}")
        print_ways(b)
        rows, passed = ratio_rows(b)
        print_table({}, rows + detail_rows(b) + startup_rows(b))
        for what, error in b.errors.items():
            print(f"\nERROR in {what}: {error}")
        return exit_status(b.errors, args.strict, passed)
    finally:
        seed_server.stop()
        source.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
