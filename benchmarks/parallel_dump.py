"""Parallel dump (`dump_jobs: N`) against single-stream pg_dump, on a database of several large tables.

One run loads --tables (default 8) equally large application-shaped tables
(text from small vocabularies beside md5 noise, numeric, jsonb, timestamptz:
~4:1 compressible, as appdata.py) into a throwaway PostgreSQL, then measures
in interleaved rounds (the order rotates), all on 127.0.0.1:

  (a) bare `pg_dump -Fc -Z0 > /dev/null`: one stream, no compression, the floor of (c).
  (b0) bare `pg_dump -Fd -j N --compress=0 --no-sync -f dir`: parallelism alone, for comparison with (a).
  (b) bare `pg_dump -Fd -j N --compress=<what dump_jobs picks> --no-sync -f dir`: the floor of (d)
      (dump_jobs passes --no-sync too: the stage copy is temporary, the stored tar is the one that lasts).
  (c) `backup-pipeline backup` (installed CLI, start-up included) with dump_jobs: 1, drill: false.
  (d) the same with dump_jobs: N, drill: false.

Storage is a local folder. Each way runs as one sampled process tree
(proc_sampler.py via five_ways.run_sampled: peak RSS of the tree; for (b)-(d)
the peak size of the output / stage directory; CPU seconds of the tree plus
the server's meanwhile, steadier than wall time on a busy machine). Ratios
use best-of wall times.
The machine is shared: the header prints the load average before and after.

Usage: .venv/bin/python benchmarks/parallel_dump.py [--size-mb 500] [--jobs 2] [--tables 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from backup_pipeline.core.dump_parallel import pg_dump_compression
from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.pgtools import find_tools

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import DBNAME, MB, MeasurementError, clean_env, log, machine_info, mb, pg_env  # noqa: E402
from five_ways import Sample, run_sampled  # noqa: E402
from proc_sampler import postgres_cpu_seconds  # noqa: E402

WAYS = ("a", "b0", "b", "c", "d")
CHUNK_ROWS = 100_000
PROBE_ROWS = 10_000  # rows loaded first to measure bytes per row
_ROWS_SQL = """
INSERT INTO {table}
SELECT g,
       (ARRAY['paid','shipped','pending','refunded','cancelled'])[1 + (g %% 5)],
       (ARRAY['DE','FR','US','GB','NL','SE','PL','ES'])[1 + (g * 7 %% 8)] || '-' || (g %% 97),
       round((random() * 10000)::numeric, 2),
       md5(g::text || %(seed)s),
       jsonb_build_object('sku', 'SKU-' || (g %% 5000), 'qty', 1 + g %% 9, 'tags',
                          jsonb_build_array('t' || (g %% 13), 't' || (g %% 7))),
       timestamptz '2024-01-01' + (g %% 31536000) * interval '1 second',
       repeat('lorem ipsum ', (1 + g %% 4)::int)
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
"""
_TABLE_SQL = """CREATE TABLE {table} (id bigint PRIMARY KEY, status text, region text, amount numeric(12,2),
token text, doc jsonb, created_at timestamptz, note text)"""


def load(server: EphemeralPostgres, size_mb: float, tables: int) -> tuple[float, int]:
    """tables equal tables summing to ~size_mb on disk; returns (seconds, database size)."""
    start = time.perf_counter()
    server.create_database(DBNAME)
    dsn = server.dsn(DBNAME)
    per_table = size_mb * MB / tables

    def one(n: int) -> None:
        table = f"big_{n}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_TABLE_SQL.format(table=table))
            conn.execute(_ROWS_SQL.format(table=table), {"seed": str(n), "lo": 1, "hi": PROBE_ROWS})
            bytes_per_row = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0] / PROBE_ROWS
            total = max(int(per_table / bytes_per_row), PROBE_ROWS)
            for lo in range(PROBE_ROWS + 1, total + 1, CHUNK_ROWS):
                conn.execute(_ROWS_SQL.format(table=table),
                             {"seed": str(n), "lo": lo, "hi": min(lo + CHUNK_ROWS - 1, total)})
            conn.execute(f"VACUUM ANALYZE {table}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(tables)))
    with psycopg.connect(dsn) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return time.perf_counter() - start, size


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=500, help="data size on disk, spread over --tables tables")
    parser.add_argument("--tables", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="N: dump_jobs of (d) and -j of (b)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg-major", type=int, default=None, help="server major (default: newest available)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="parallel-dump-"))
    server = EphemeralPostgres(args.pg_major)
    samples: dict[str, list[Sample]] = {w: [] for w in WAYS}
    try:
        log(f"starting PostgreSQL {server.version} ({server.tools.origin})")
        server.start()
        load_s, db_size = load(server, args.size_mb, args.tables)
        log(f"loaded {args.tables} tables: {mb(db_size)} in {load_s:.0f} s")
        tools = find_tools(server.major)
        compress, codec, level = pg_dump_compression(tools, "zstd", 1)
        home, store = work / "dagster_home", work / "store"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        (work / "backup_targets.yaml").write_text(
            f"storage: file://{store}\ntargets:\n"
            f"  one:\n    dsn_env: DATABASE_URL\n    drill: false\n"
            f"  par:\n    dsn_env: DATABASE_URL\n    drill: false\n    dump_jobs: {args.jobs}\n")
        cli = str(Path(sys.executable).parent / "backup-pipeline")

        def way_a() -> Sample:
            sample, _, _ = run_sampled([tools.path("pg_dump"), "-Fc", "-Z0"], pg_env(server), "pg_dump -Fc",
                                       stdout=subprocess.DEVNULL)
            return sample

        def way_b(compress: str) -> Sample:
            out = work / "bare-dir"
            try:
                sample, _, _ = run_sampled([tools.path("pg_dump"), "-Fd", f"-j{args.jobs}", f"--compress={compress}",
                                            "--no-sync", "-f", str(out)], pg_env(server), "pg_dump -Fd -j", stage=out)
                sample.size = dir_size(out)
                return sample
            finally:
                shutil.rmtree(out, ignore_errors=True)

        def way_cli(target: str, way: str) -> Sample:
            stage = work / f"stage-{way}"
            env = {**clean_env(), "DAGSTER_HOME": str(home), "BACKUP_HISTORY_URL": f"sqlite:///{home / 'h.sqlite'}",
                   "BACKUP_TARGETS_FILE": str(work / "backup_targets.yaml"), "BACKUP_STAGE_DIR": str(stage),
                   "DATABASE_URL": server.dsn(DBNAME)}
            try:
                sample, stdout, _ = run_sampled([cli, "backup", "--target", target, "--json"], env,
                                                f"backup-pipeline ({way})", stage=stage, cwd=work)
            finally:
                shutil.rmtree(store, ignore_errors=True)
            record = json.loads(stdout)
            if record.get("status") != "completed":
                raise MeasurementError(f"({way}) backup status {record.get('status')!r}")
            sample.size = int(record["size_bytes"])
            return sample

        run = {"a": way_a, "b0": lambda: way_b("0"), "b": lambda: way_b(compress), "c": lambda: way_cli("one", "c"), "d": lambda: way_cli("par", "d")}
        load_before = os.getloadavg()[0]
        for n in range(args.rounds):
            for way in WAYS[n % len(WAYS):] + WAYS[:n % len(WAYS)]:
                before = postgres_cpu_seconds(server.data_dir)
                sample = run[way]()
                sample.cpu += postgres_cpu_seconds(server.data_dir) - before  # the server's share: its reads, COPY
                samples[way].append(sample)
                log(f"round {n + 1}/{args.rounds} ({way}): {sample.seconds:.2f} s, peak RSS {mb(sample.tree_peak)}, "
                    f"stage peak {mb(sample.stage_peak)}")
        load_after = os.getloadavg()[0]
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    def best(way: str, attr: str = "seconds") -> float:
        return min(getattr(s, attr) for s in samples[way])

    def peak(way: str, attr: str):
        values = [getattr(s, attr) for s in samples[way] if getattr(s, attr) is not None]
        return max(values) if values else None

    titles = {"a": "(a) pg_dump -Fc -Z0 > /dev/null", "b0": f"(b0) pg_dump -Fd -j{args.jobs} --compress=0",
              "b": f"(b) pg_dump -Fd -j{args.jobs} --compress={compress}",
              "c": "(c) backup-pipeline, dump_jobs: 1", "d": f"(d) backup-pipeline, dump_jobs: {args.jobs}"}
    print(f"\n        server: PostgreSQL {server.version}, pg_dump {tools.version} ({tools.origin}); "
          f"dump_jobs compression: {codec}:{level}")
    print(f"          data: {args.tables} tables, database {mb(db_size)} (asked {args.size_mb:g} MB), loaded in {load_s:.0f} s")
    print(f"        rounds: {args.rounds}, interleaved; best-of wall time, peaks are max over rounds")
    print(f"       machine: {machine_info(load_before, load_after)}")
    print("  load average: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min, at the end)\n")
    print(f"{'way':<44} {'best s':>8} {'all s':>16} {'CPU s':>7} {'peak RSS':>10} {'stage peak':>11} {'stored':>10}")
    for way in WAYS:
        all_s = "/".join(f"{s.seconds:.1f}" for s in samples[way])
        print(f"{titles[way]:<44} {best(way):>8.2f} {all_s:>16} {best(way, 'cpu'):>7.1f} {mb(peak(way, 'tree_peak')):>10} "
              f"{mb(peak(way, 'stage_peak')):>11} {mb(peak(way, 'size')):>10}")
    print()
    for top, bottom, what in (("b0", "a", "bare parallel, uncompressed, vs bare single stream"),
                              ("b", "a", "bare parallel vs bare single stream"),
                              ("d", "c", "ours: dump_jobs N vs 1"),
                              ("d", "a", "ours parallel vs bare single stream"),
                              ("c", "a", "ours single vs bare single stream"),
                              ("d", "b", "ours parallel vs bare parallel")):
        print(f"  ({top})/({bottom}) = {best(top) / best(bottom):.2f}   {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
