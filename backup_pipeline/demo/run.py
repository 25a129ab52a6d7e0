"""`backup-pipeline demo` and `dev`: the whole product on an embedded PostgreSQL.

The demo loads a sample database into a throwaway server, backs it up with the
real backup job to local storage, restores it into a second fresh server with
the real restore job, and prints both sides' row counts and the history.
"""

import os
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import psycopg

from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.launch import ensure_dagster_home, history, run_backup, run_restore

DEMO_DSN_ENV = "DEMO_DATABASE_URL"
DEMO_TARGET = "demo"


def start_demo_database() -> tuple[EphemeralPostgres, str]:
    server = EphemeralPostgres(password="demo-password").start()
    dsn = server.create_database("shop")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(files("backup_pipeline.demo").joinpath("sample.sql").read_text())
    return server, dsn


def run_demo(verbose: bool = False) -> int:
    started = time.monotonic()
    home = ensure_dagster_home()
    storage_url = f"file://{home / 'demo_backups'}"
    source, dsn = start_demo_database()
    try:
        print(f"1. Sample database 'shop' on embedded PostgreSQL {source.version} (127.0.0.1:{source.port})")
        os.environ[DEMO_DSN_ENV] = dsn
        outcome, record = run_backup(DEMO_TARGET, dsn_env=DEMO_DSN_ENV, storage_url=storage_url, verbose=verbose)
        if not outcome.success or record is None:
            print(f"backup failed: {outcome.error}", file=sys.stderr)
            return 1
        print(f"2. Backup {record.id}: {record.size_bytes} bytes, sha256 {record.sha256[:12]}…, "
              f"{record.duration_seconds:.2f}s\n   {record.manifest_uri}")
        with EphemeralPostgres() as fresh:
            restore_dsn = fresh.create_database("shop_restored")
            restored = run_restore(backup_id=record.id, to_dsn=restore_dsn, verbose=verbose)
            if not restored.success:
                print(f"restore failed: {restored.error}", file=sys.stderr)
                return 1
            result = restored.output
            print(f"3. Restored into a fresh PostgreSQL {fresh.version} server "
                  f"(roles created: {', '.join(result['roles_created']) or 'none'})\n")
            expected, actual = result["expected_row_counts"], result["row_counts"]
            print(f"   {'table':42} {'in backup':>10} {'restored':>10}")
            for table in sorted(set(expected) | set(actual)):
                mark = "" if expected.get(table) == actual.get(table) else "  <-- differs"
                print(f"   {table:42} {expected.get(table, '-'):>10} {actual.get(table, '-'):>10}{mark}")
        print("\n4. History (newest first):")
        for r in history().list(limit=5):
            print(f"   {r.timestamp:%Y-%m-%d %H:%M:%S} {r.target:8} {r.type:8} {r.status:10} "
                  f"{r.verification_status:12} {r.size_mb} MB  {r.id}")
        print(f"\nDemo finished in {time.monotonic() - started:.1f}s. Runs are in the Dagster UI: make dev")
        return 0
    finally:
        source.stop()


def run_dev(port: int = 3000) -> int:
    """Keep a demo database running and open the Dagster UI with it as target 'demo'."""
    from backup_pipeline.dagster_home import migrate_storage

    migrate_storage(lambda line: None)  # before `dagster dev` starts a daemon and a webserver on it at once
    source, dsn = start_demo_database()
    env = dict(os.environ, **{
        DEMO_DSN_ENV: dsn,
        "DATABASE_URL": dsn,
        "BACKUP_TARGET": DEMO_TARGET,
        "BACKUP_STORAGE_URL": os.environ.get("BACKUP_STORAGE_URL") or f"file://{Path(os.environ['DAGSTER_HOME']) / 'demo_backups'}",
    })
    print(f"Demo database on 127.0.0.1:{source.port}; Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops both)")
    # SIGTERM is handled like Ctrl-C so the UI shuts down and the demo server is always removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workspace = Path.cwd() / "workspace.yaml"
    location = ["-w", str(workspace)] if workspace.exists() else ["-m", "backup_pipeline.definitions"]
    # Its own process group, so an interrupt reaches the webserver and daemon it starts, as Ctrl-C in a terminal does.
    ui = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", *location, "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        start_new_session=True,
    )
    try:
        return ui.wait()
    except KeyboardInterrupt:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            ui.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
        return 0
    finally:
        source.stop()
