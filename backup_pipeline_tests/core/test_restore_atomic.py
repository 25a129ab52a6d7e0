"""Restores into real databases are all or nothing, even when the restoring process alone is killed.

The restore runs in a `python -c` child in its own session; the test kills only
that python (SIGKILL, as the OOM killer would), never its group, then checks
what a user would: the destination's own tables, rows and large objects, and
that no psql or pg_restore of it is left running.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest

from backup_pipeline.core.archive import BackupNames, manifest_bytes
from backup_pipeline.core.backup import build_manifest, publish
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.errors import RestoreError
from backup_pipeline.core.restore import restore_from_storage, user_relations
from backup_pipeline.core.storage import open_storage
from backup_pipeline_tests.fix_pg import new_database, sample_sql
from backup_pipeline_tests.pgcheck import fingerprint

BIG_ROWS = 400_000

RESTORE_CODE = """
import os, sys
from pathlib import Path
from backup_pipeline.core.restore import restore_from_storage
from backup_pipeline.core.storage import open_storage
restore_from_storage(open_storage(sys.argv[1]), sys.argv[2], os.environ["BP_TEST_TO_DSN"],
                     stage_dir=Path(sys.argv[3]), replace=True)
print("restored", flush=True)
"""


@pytest.fixture(scope="module")
def published(pg_server, tmp_path_factory):
    """The sample shop plus a 400k-row table, backed up once into a local folder: (storage, manifest key, source)."""
    base = tmp_path_factory.mktemp("atomic")
    dsn = new_database(pg_server.dsn())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sample_sql())
        conn.execute("CREATE TABLE public.events (id bigint PRIMARY KEY, payload text, at timestamptz DEFAULT now())")
        conn.execute(f"INSERT INTO public.events (id, payload) SELECT g, md5(g::text) FROM generate_series(1, {BIG_ROWS}) g")
    names = BackupNames.for_backup("shop", datetime.now(UTC), "zstd")
    result = dump_database(dsn, base / "stage", names)
    manifest = build_manifest(backup_id=f"id-{names.base}", target="shop", backup_type="manual", names=names,
                              dump=result, dagster_run_id=None)
    storage = open_storage(f"file://{base / 'store'}")
    publish(storage, names, result, manifest)
    # Only the big table is large enough for "killed during its data load" to mean that table.
    assert max(n for t, n in manifest["row_counts"].items() if t != "public.events") < 100_000
    return storage, names.manifest, dsn


@pytest.fixture
def busy_destination(pg_server) -> str:
    """A database with its own data: a table the backup also has, one it lacks, and a large object."""
    dsn = new_database(pg_server.dsn(), "bp_dest")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO public.customers SELECT g, 'mine ' || g FROM generate_series(1, 7) g")
        conn.execute("CREATE TABLE public.mine (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO public.mine SELECT g, md5(g::text) FROM generate_series(1, 1234) g")
        conn.execute("SELECT lo_from_bytea(0, 'my own large object')")
    return dsn


def _spawn_restore(published, to_dsn: str, stage: Path, **env: str) -> subprocess.Popen:
    storage, key, _ = published
    return subprocess.Popen(
        [sys.executable, "-c", RESTORE_CODE, f"file://{storage.root}", key, str(stage)],
        env={**os.environ, "BP_TEST_TO_DSN": to_dsn, **env},  # the DSN holds a password: never in argv
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def _lines(stream) -> queue.Queue:
    out: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [out.put(line.decode(errors="replace")) for line in stream], daemon=True).start()
    return out


def _copied_rows(dsn: str) -> int:
    """Rows the restore's COPY has loaded so far (they are invisible outside its transaction)."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT max(p.tuples_processed) FROM pg_stat_progress_copy p JOIN pg_database d ON d.oid = p.datid "
            "WHERE d.datname = %s", (dbname,)
        ).fetchone()
    return row[0] or 0


def _kill_parent_only(proc: subprocess.Popen, running: set[str]) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    assert {c.name() for c in children} == running
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return children


def _assert_left_as_before(dsn: str, before: dict, children: list[psutil.Process]) -> None:
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running after their restore died: {[(p.pid, p.name()) for p in alive]}"
    assert fingerprint(dsn) == before
    with psycopg.connect(dsn) as conn:
        assert sorted(user_relations(conn)) == ["public.customers", "public.mine"]
        assert conn.execute("SELECT count(*) FROM public.mine").fetchone() == (1234,)
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone() == (1,)


@pytest.mark.slow
def test_killing_the_restoring_process_during_the_data_load_changes_nothing(published, busy_destination, tmp_path):
    before = fingerprint(busy_destination)
    proc = _spawn_restore(published, busy_destination, tmp_path / "stage")
    try:
        deadline = time.monotonic() + 120
        while (copied := _copied_rows(busy_destination)) < 100_000:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the restore never reached the big table"
            time.sleep(0.02)
        assert copied < BIG_ROWS  # killed mid-table
        children = _kill_parent_only(proc, {"psql", "pg_restore"})
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_left_as_before(busy_destination, before, children)


@pytest.mark.slow
def test_killing_the_restoring_process_right_before_commit_changes_nothing(published, busy_destination, tmp_path):
    before = fingerprint(busy_destination)
    proc = _spawn_restore(published, busy_destination, tmp_path / "stage", BACKUP_PIPELINE_TEST_PAUSE_BEFORE_COMMIT="60")
    try:
        stderr = _lines(proc.stderr)
        while "pausing" not in (line := stderr.get(timeout=120)):
            assert proc.poll() is None, line
        # Everything is restored and counted, still uncommitted: the transaction's locks keep others waiting.
        with psycopg.connect(busy_destination, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT count(*) FROM public.mine")
        children = _kill_parent_only(proc, {"psql"})  # pg_restore has written its whole script
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_left_as_before(busy_destination, before, children)
    assert not list((tmp_path / "stage").iterdir())  # the downloaded archive was unlinked once opened


def _tampered(published, table: str, delta: int) -> str:
    """A copy of the stored manifest whose row count for table is off by delta; returns its key."""
    storage, key, _ = published
    manifest = json.loads(storage.get_bytes(key))
    manifest["row_counts"][table] += delta
    tampered_key = key.replace(".manifest.json", f".tampered{delta}.manifest.json")
    storage.put_bytes(manifest_bytes(manifest), tampered_key)
    return tampered_key


def test_a_row_count_mismatch_rolls_a_replace_back(published, busy_destination, tmp_path):
    storage, _, _ = published
    key = _tampered(published, "sales.order_items", 1)
    before = fingerprint(busy_destination)
    with pytest.raises(RestoreError, match="nothing was changed") as err:
        restore_from_storage(storage, key, busy_destination, stage_dir=tmp_path / "stage", replace=True)
    assert "sales.order_items: expected" in str(err.value) and "\n" not in str(err.value)
    assert fingerprint(busy_destination) == before
    assert not list((tmp_path / "stage").iterdir())


def test_a_row_count_mismatch_leaves_an_empty_destination_empty(published, pg_server, tmp_path):
    storage, _, _ = published
    key = _tampered(published, "public.events", -1)
    empty = new_database(pg_server.dsn(), "bp_empty")
    with pytest.raises(RestoreError, match="public.events: expected 399999, got 400000"):
        restore_from_storage(storage, key, empty, stage_dir=tmp_path / "stage")
    with psycopg.connect(empty) as conn:
        assert user_relations(conn) == []
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone() == (0,)


@pytest.mark.slow
def test_a_replace_restore_holds_the_backup_and_nothing_of_before(published, busy_destination, tmp_path):
    storage, key, source = published
    restored = restore_from_storage(storage, key, busy_destination, stage_dir=tmp_path / "stage", replace=True)
    assert restored.row_counts == restored.manifest["row_counts"] and restored.mismatches == {}
    assert restored.row_counts["public.events"] == BIG_ROWS
    assert fingerprint(busy_destination) == fingerprint(source)
    with psycopg.connect(busy_destination) as conn:
        assert "public.mine" not in user_relations(conn)
        assert conn.execute("SELECT count(*) FROM public.customers").fetchone() == (5000,)
    assert not list((tmp_path / "stage").iterdir())
