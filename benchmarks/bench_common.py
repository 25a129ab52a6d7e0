"""Helpers shared by the benchmark scripts in this folder (backup_speed.py, drill_speed.py).

Not a benchmark itself. It holds what both scripts do the same way: logging to
stderr, a scrubbed environment for child processes, timing and checked
subprocess runs, the throwaway PostgreSQL with `pgbench -i -s SCALE` loaded
(`pgbench_database`), recording failed measurements for --keep-going
(`attempt`), and the text of the report (cells, PASS/FAIL, the header and the
measurement table, the exit status).

The scripts are run as `.venv/bin/python benchmarks/<script>.py` from any
directory; each puts its own folder on sys.path before `import bench_common`,
so this module needs no package and no install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg

from backup_pipeline.core.ephemeral import EphemeralPostgres

MB = 1024 * 1024
DBNAME = "bench"
# Variables that would change what the job or the pg tools do if inherited from the caller's shell.
_SCRUB_PREFIXES = ("PG", "AWS_", "R2_", "BACKUP_", "DAGSTER_")
_SCRUB_NAMES = ("DATABASE_URL", "PROD_SUPABASE_DB_URL")

Row = tuple[str, str, str, str]  # measurement, value, target, result


class MeasurementError(RuntimeError):
    pass


# ---------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clean_env() -> dict[str, str]:
    """This process's environment without anything that configures PostgreSQL, S3 or the pipeline."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB_NAMES
    }


def pg_env(server: EphemeralPostgres) -> dict[str, str]:
    """libpq connection variables for the bench database (the server's random password in the environment only)."""
    return {**clean_env(), "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGUSER": "postgres",
            "PGDATABASE": DBNAME, "PGPASSWORD": server.password}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_checked(args: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    result = subprocess.run(args, stderr=subprocess.PIPE, text=True, **kwargs)
    if result.returncode != 0:
        raise MeasurementError(f"{what} exited with {result.returncode}: {result.stderr.strip()[-1500:]}")
    return result


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / MB:.1f} MB"


def attempt(errors: dict[str, str], what: str, keep_going: bool, fn: Callable[[], Any]) -> Any:
    """Run one measurement; with --keep-going a failure is recorded in `errors` and None returned."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        if not keep_going:
            raise
        errors.setdefault(what, f"{type(exc).__name__}: {exc}")
        log(f"{what} failed: {exc}")
        return None


# ---------------------------------------------------------------- setup


def load_pgbench(server: EphemeralPostgres, scale: int) -> tuple[float, int]:
    """Create the database, run the wheel's `pgbench -i`, VACUUM ANALYZE; returns (seconds, database size)."""
    server.create_database(DBNAME)
    pgbench = str(server.tools.bin_dir / "pgbench")
    # Steps d(rop) t(ables) g(enerate) p(rimary keys); the vacuum step is our explicit VACUUM ANALYZE below.
    load_s, _ = timed(lambda: run_checked([pgbench, "-i", "-q", "-I", "dtgp", "-s", str(scale)], "pgbench -i",
                                          env=pg_env(server)))
    with psycopg.connect(server.dsn(DBNAME), autocommit=True) as conn:
        vacuum_s, _ = timed(lambda: conn.execute("VACUUM ANALYZE"))
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    log(f"pgbench -i -s {scale}: {load_s:.1f} s, VACUUM ANALYZE {vacuum_s:.1f} s, database {mb(size)}")
    return load_s + vacuum_s, size


@contextlib.contextmanager
def pgbench_database(pg_major: int | None, scale: int,
                     work_prefix: str) -> Iterator[tuple[EphemeralPostgres, Path, float, int]]:
    """A temp work dir and a started EphemeralPostgres with pgbench data loaded.

    Yields (server, work dir, load + VACUUM ANALYZE seconds, database size); on
    exit the server is stopped (a no-op when the caller already stopped it)
    and the work dir deleted.
    """
    work = Path(tempfile.mkdtemp(prefix=work_prefix))
    server = EphemeralPostgres(pg_major)
    try:
        log(f"starting PostgreSQL {server.version} ({server.tools.origin})")
        server.start()
        load_s, db_size = load_pgbench(server, scale)
        yield server, work, load_s, db_size
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- report


def fmt_seconds(value: float | None) -> str:
    return "ERROR" if value is None else f"{value:.2f} s"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio_of(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top and bottom else None


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def pgbench_info(scale: int, load_s: float, db_size: int) -> str:
    """The header's "pgbench scale" value."""
    return f"{scale}: load + VACUUM ANALYZE {load_s:.1f} s, database {mb(db_size)}"


def machine_info(load_before: float, load_after: float) -> str:
    """The header's "machine" value: CPUs, RAM and the 1-minute load around the measurements."""
    return (f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
            f"1-min load {load_before:.2f} before / {load_after:.2f} after (other work skews timings)")


def print_table(info: dict[str, str], rows: list[Row]) -> None:
    """The header (one `key: value` line per info item) and the measurement / value / target / result table."""
    print()
    for key, value in info.items():
        print(f"{key:>14}: {value}")
    print()
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>22}  {'target':>10}  result")
    print("-" * (width + 46))
    for name, value, target, result in rows:
        print(f"{name:<{width}}  {value:>22}  {target:>10}  {result}")


def exit_status(errors: dict[str, str], strict: bool, passed: bool) -> int:
    """2 when a measurement failed; else 1 when --strict and a target FAILed; else 0."""
    if errors:
        return 2
    return 1 if strict and not passed else 0
