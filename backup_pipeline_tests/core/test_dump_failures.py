"""Bad input and real failures while dumping: each a clear error, nothing left behind."""

import os
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.ephemeral import free_port
from backup_pipeline.core.errors import ConfigError, ConnectionFailed, DumpError, PgToolError
from backup_pipeline.core.pgtools import embedded_bin_dirs, tool_version
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD


def _names() -> BackupNames:
    return BackupNames.for_backup("t1", datetime.now(UTC), "zstd")


def _with(dsn: str, **changes: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(changes)
    return psycopg.conninfo.make_conninfo(**params)


def _assert_nothing_staged(stage: Path) -> None:
    assert not stage.exists() or not any(stage.iterdir()), list(stage.iterdir())


def test_wrong_password_names_user_and_fix_without_the_password(source_dsn, tmp_path):
    bad = _with(source_dsn, password="Wr0ng-pa55word")
    with pytest.raises(ConnectionFailed) as err:
        dump_database(bad, tmp_path / "stage", _names())
    message = str(err.value)
    assert "password authentication failed" in message and "'postgres'" in message
    assert "Wr0ng-pa55word" not in message and SOURCE_PASSWORD not in message
    _assert_nothing_staged(tmp_path / "stage")


def test_unreachable_port_names_host_and_port(source_dsn, tmp_path):
    port = free_port()
    with pytest.raises(ConnectionFailed, match=f"nothing accepts connections on 127.0.0.1:{port}"):
        dump_database(_with(source_dsn, port=str(port)), tmp_path / "stage", _names())


def test_missing_database_is_named(source_dsn, tmp_path):
    with pytest.raises(ConnectionFailed, match="database 'no_such_db' does not exist"):
        dump_database(_with(source_dsn, dbname="no_such_db"), tmp_path / "stage", _names())


def test_supabase_transaction_pooler_is_refused_before_connecting(tmp_path):
    dsn = f"postgresql://postgres.abc:{SOURCE_PASSWORD}@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
    with pytest.raises(ConfigError, match="transaction pooler") as err:
        dump_database(dsn, tmp_path / "stage", _names())
    assert "session pooler" in str(err.value) and SOURCE_PASSWORD not in str(err.value)


def test_pg_dump_older_than_the_server_is_refused_naming_both_versions(source_dsn, tmp_path):
    old = next(d for d in embedded_bin_dirs() if tool_version(str(d / "pg_dump")).startswith("16."))
    with pytest.raises(PgToolError) as err:
        dump_database(source_dsn, tmp_path / "stage", _names(), pg_bin_dir=str(old))
    message = str(err.value)
    assert "pg_dump 16." in message and "PostgreSQL 18" in message and "postgresql-client-18" in message


def test_real_pg_dump_version_mismatch_is_what_we_guard_against(pg_server, source_dsn, tmp_path):
    """Without the locator, pg_dump 16 against server 18 really aborts."""
    old = next(d for d in embedded_bin_dirs() if tool_version(str(d / "pg_dump")).startswith("16."))
    env = dict(os.environ, PGPASSWORD=SOURCE_PASSWORD)
    params = psycopg.conninfo.conninfo_to_dict(source_dsn)
    proc = subprocess.run(
        [str(old / "pg_dump"), "-h", "127.0.0.1", "-p", params["port"], "-U", "postgres", params["dbname"]],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode != 0 and "server version mismatch" in proc.stderr


def _blocked_dump(source_dsn: str, stage: Path, **kwargs):
    """Run dump_database in a thread while a lock on a table keeps pg_dump waiting."""
    outcome: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            outcome["result"] = dump_database(source_dsn, stage, _names(), **kwargs)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    return thread, outcome


def _pg_dump_processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [p for p in me.children(recursive=True) if p.name() == "pg_dump"]


def test_pg_dump_killed_mid_stream_fails_cleanly(source_dsn, tmp_path):
    stage = tmp_path / "stage"
    with psycopg.connect(source_dsn) as locker:
        locker.execute("LOCK TABLE sales.order_items IN ACCESS EXCLUSIVE MODE")
        thread, outcome = _blocked_dump(source_dsn, stage, lock_wait_timeout_s=60)
        thread.start()
        deadline = time.monotonic() + 20
        while not (procs := _pg_dump_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs, "pg_dump never started"
        time.sleep(0.3)  # it has written its header and waits for the lock
        for proc in procs:
            proc.kill()
        thread.join(30)
        locker.rollback()
    error = outcome.get("error")
    assert isinstance(error, DumpError), outcome
    assert "killed by SIGKILL" in str(error) and "no backup was written" in str(error)
    _assert_nothing_staged(stage)


def test_lock_wait_timeout_gives_a_clear_error(source_dsn, tmp_path):
    stage = tmp_path / "stage"
    with psycopg.connect(source_dsn) as locker:
        locker.execute("LOCK TABLE public.customers IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DumpError, match="lock_wait_timeout"):
            dump_database(source_dsn, stage, _names(), lock_wait_timeout_s=1)
        locker.rollback()
    _assert_nothing_staged(stage)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode:
        pytest.skip("needs root to mount a 64 KiB tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_names_the_file_and_leaves_nothing(source_dsn, tiny_disk):
    stage = tiny_disk / "stage"
    with pytest.raises(DumpError, match="disk full while writing") as err:
        dump_database(source_dsn, stage, _names())
    assert str(stage) in str(err.value) and "stage_dir" in str(err.value)
    _assert_nothing_staged(stage)
    assert not _pg_dump_processes()
