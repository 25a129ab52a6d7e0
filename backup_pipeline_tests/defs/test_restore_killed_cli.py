"""`backup-pipeline restore` killed -9 on its own (closed terminal, OOM killer): the destination is as before."""

import os
import signal
import subprocess
import sys
import time

import psutil
import psycopg
import pytest

from backup_pipeline.launch import run_backup
from backup_pipeline_tests.fix_pg import new_database
from backup_pipeline_tests.pgcheck import fingerprint

CLI = os.path.join(os.path.dirname(sys.executable), "backup-pipeline")


def _paused_before_commit(dsn: str) -> bool:
    """The restore's session has run its row-count query and sits in its open transaction, waiting for COMMIT."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        return bool(conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = 'backup_pipeline restore' "
            "AND state = 'idle in transaction' AND query LIKE '%%counts%%jsonb_object_agg%%'", (dbname,)
        ).fetchone())


@pytest.mark.slow
def test_killing_the_cli_alone_right_before_commit_leaves_the_destination_as_it_was(
        configure, backup_env, source_dsn, pg_server, tmp_path):
    dev = new_database(pg_server.dsn())
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (note text); INSERT INTO scratch VALUES ('work in progress')")
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False},
               "dev": {"dsn_env": "DEV_URL", "restore_destination": True}},
              {"SHOP_URL": source_dsn, "DEV_URL": dev})
    outcome, record = run_backup("shop")
    assert outcome.success, outcome.error
    before = fingerprint(dev)

    log = tmp_path / "cli.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([CLI, "restore", "--backup-id", record.id, "--to", "dev"],
                                env=dict(os.environ, BACKUP_PIPELINE_TEST_PAUSE_BEFORE_COMMIT="60"),
                                stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _paused_before_commit(dev):
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the restore never reached its COMMIT"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert "psql" in {c.name() for c in children}
        os.kill(proc.pid, signal.SIGKILL)  # the CLI process only, not its group
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running after the CLI died: {[(p.pid, p.name()) for p in alive]}"
    assert fingerprint(dev) == before
    with psycopg.connect(dev) as conn:
        assert conn.execute("SELECT note FROM scratch").fetchall() == [("work in progress",)]
