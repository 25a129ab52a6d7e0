"""Dump and restore against real servers: what goes in comes back out."""

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from backup_pipeline.core.archive import BackupNames, sha256_of
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.ephemeral import EphemeralPostgres
from backup_pipeline.core.errors import RestoreError
from backup_pipeline.core.restore import create_database, restore_archive
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD, new_database, sample_sql
from backup_pipeline_tests.pgcheck import fingerprint


def _names(codec: str = "zstd") -> BackupNames:
    return BackupNames.for_backup("t1", datetime.now(UTC), codec)


def _restore(result, to_dsn: str) -> None:
    with open(result.archive_path, "rb") as f:
        restore_archive(
            f,
            result.codec,
            to_dsn,
            source_major=result.server_major,
            dump_tool_major=int(result.pg_dump_version.split(".")[0]),
            globals_sql=result.globals_path.read_text() if result.globals_path else None,
        )


@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_round_trip_restores_everything_into_a_fresh_server(source_dsn, restore_server, tmp_path, codec):
    result = dump_database(source_dsn, tmp_path, _names(codec))

    assert result.archive_path.name.endswith({"zstd": ".dump.zst", "gzip": ".dump.gz", "none": ".dump"}[codec])
    with open(result.archive_path, "rb") as f:
        assert sha256_of(f) == (result.archive_sha256, result.archive_size)
    assert result.row_counts["public.customers"] == 5000
    assert result.row_counts['Reporting Ünits.Daily "Totals" €'] == 700
    assert result.row_counts["sales.orders_2025"] + result.row_counts["sales.orders_2026"] == 20000
    assert not list(tmp_path.glob("*.partial"))

    to_dsn = create_database(restore_server.dsn(), "restored")
    _restore(result, to_dsn)

    assert fingerprint(to_dsn) == fingerprint(source_dsn)
    with psycopg.connect(to_dsn) as conn:
        roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'shop%'")}
        assert roles == {"shop_app", "shop_readonly"}
        assert conn.execute(
            "SELECT pg_has_role('shop_app', 'shop_readonly', 'MEMBER')"
        ).fetchone() == (True,)


def test_row_counts_come_from_the_dump_snapshot_under_concurrent_writes(source_dsn, tmp_path):
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO public.products (sku, title, price_cents) VALUES (gen_random_uuid()::text, 'x', 1)")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.2)
        result = dump_database(source_dsn, tmp_path, _names())
    finally:
        stop.set()
        writer.join()
    with psycopg.connect(source_dsn) as conn:
        now = conn.execute("SELECT count(*) FROM public.products").fetchone()[0]
    assert now > result.row_counts["public.products"] > 500  # rows kept arriving after the snapshot

    with EphemeralPostgres(18) as server:
        to_dsn = create_database(server.dsn(), "r")
        _restore(result, to_dsn)
        with psycopg.connect(to_dsn) as conn:
            restored = conn.execute("SELECT count(*) FROM public.products").fetchone()[0]
    assert restored == result.row_counts["public.products"]


def test_restore_refuses_a_database_that_is_not_empty(source_dsn, tmp_path):
    result = dump_database(source_dsn, tmp_path, _names())
    with pytest.raises(RestoreError, match="is not empty") as err:
        _restore(result, source_dsn)
    assert "public.customers" in str(err.value) or "sales." in str(err.value)


def test_restore_refuses_an_older_server(source_dsn, tmp_path):
    result = dump_database(source_dsn, tmp_path, _names())
    with EphemeralPostgres(16) as old:
        with pytest.raises(RestoreError, match="older than the backup's server 18"):
            _restore(result, old.dsn())


def test_a_pg16_server_is_dumped_with_pg16_tools_and_restores_into_18(tmp_path):
    with EphemeralPostgres(16) as source, EphemeralPostgres(18) as dest:
        dsn = new_database(source.dsn())
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sample_sql())
        result = dump_database(dsn, tmp_path, _names())
        assert result.server_version.startswith("16.") and result.pg_dump_version.startswith("16.")
        to_dsn = create_database(dest.dsn(), "r")
        _restore(result, to_dsn)
        assert fingerprint(to_dsn) == fingerprint(dsn)


@pytest.mark.pg15
def test_production_pg15_server_round_trips_into_embedded_18(pg15_database, tmp_path):
    with psycopg.connect(pg15_database, autocommit=True) as conn:
        conn.execute(sample_sql())
    result = dump_database(pg15_database, tmp_path, _names())
    assert result.server_version.startswith("15.")
    assert int(result.pg_dump_version.split(".")[0]) >= 15
    with EphemeralPostgres(18) as dest:
        to_dsn = create_database(dest.dsn(), "r")
        _restore(result, to_dsn)
        assert fingerprint(to_dsn) == fingerprint(pg15_database)


def test_password_is_passed_in_the_environment_not_argv(pg_server, source_dsn, tmp_path):
    """Hold a lock so pg_dump waits, then read its real command line."""
    import psutil

    seen: list[list[str]] = []
    with psycopg.connect(source_dsn) as locker:
        locker.execute("LOCK TABLE public.products IN ACCESS EXCLUSIVE MODE")
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                for proc in psutil.process_iter(["name", "cmdline"]):
                    if proc.info["name"] in ("pg_dump", "pg_dumpall"):
                        seen.append(proc.info["cmdline"] or [])
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        dumper = threading.Thread(target=lambda: dump_database(source_dsn, tmp_path, _names(), lock_wait_timeout_s=30))
        dumper.start()
        time.sleep(1.5)
        locker.rollback()
        dumper.join()
        done.set()
        watcher.join()
    assert seen, "pg_dump was never observed running"
    assert all(SOURCE_PASSWORD not in " ".join(cmd) for cmd in seen)
