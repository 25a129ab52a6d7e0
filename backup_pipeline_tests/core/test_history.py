"""Backup history against real SQLite and PostgreSQL 15 databases, no mocks.

The `history_url` fixture runs each backend-neutral test on both; the seed's
operator SQL is run verbatim on PostgreSQL because users paste it as-is.
"""

import concurrent.futures
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from backup_pipeline.core.history import (
    COMPLETED,
    FAILED,
    RUNNING,
    SOURCE_MANIFEST,
    STANDBY_FAILED,
    STANDBY_SYNCED,
    VERIFICATION_FAILED,
    VERIFIED,
    HistoryStore,
    default_history_url,
    normalize_history_url,
)
from backup_pipeline.core.history.migrate import alembic_config, head_revision, sqlite_path
from backup_pipeline.core.history.models import UTCDateTime, metadata

SHA = "ab" * 32
COMPLETE_ARGS = {
    "archive_uri": "s3://bucket/app/2025/db.dump",
    "globals_uri": "s3://bucket/app/2025/globals.sql",
    "manifest_uri": "s3://bucket/app/2025/manifest.json",
    "size_bytes": 3 * 1024 * 1024 + 512 * 1024,
    "sha256": SHA,
    "row_counts": {"public.users": 10, "public.orders": 25},
    "duration_seconds": 4.25,
    "server_version": "15.20",
    "pg_dump_version": "15.20",
    "compression": "zstd",
}
SEED_QUERIES = [
    "SELECT timestamp, type, size_mb, status, verification_status, retention_until FROM public.backup_history ORDER BY timestamp DESC LIMIT 10;",
    "SELECT * FROM public.recent_backups WHERE timestamp > NOW() - INTERVAL '7 days';",
    "SELECT timestamp, type, size_mb, retention_until, retention_until - NOW() as time_until_expiry FROM public.backup_history WHERE retention_until < NOW() + INTERVAL '7 days' AND status = 'completed' ORDER BY retention_until;",
    "SELECT COUNT(*) FILTER (WHERE status = 'completed') * 100.0 / COUNT(*) as success_rate, COUNT(*) as total_backups, AVG(size_mb) as avg_size_mb FROM public.backup_history WHERE timestamp > NOW() - INTERVAL '30 days';",
    "UPDATE public.backup_history SET retention_until = NOW() + INTERVAL '90 days' WHERE id = 'backup-id-here';",
]


@pytest.fixture
def store(history_url: str):
    with HistoryStore(history_url) as store:
        yield store


def _not_version_table(obj, name, type_, reflected, compare_to) -> bool:
    return not (type_ == "table" and name == "alembic_version")


def _psycopg_dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _assert_schema_at_head(history_url: str) -> None:
    engine = sa.create_engine(normalize_history_url(history_url))
    try:
        with engine.connect() as conn:
            schema = "public" if conn.dialect.name == "postgresql" else None
            opts = {"version_table_schema": schema, "include_object": _not_version_table}
            context = MigrationContext.configure(conn, opts=opts)
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, metadata) == []
            assert sa.inspect(conn).has_table("backup_history", schema=schema)
            assert set(sa.inspect(conn).get_view_names(schema=schema)) == {"recent_backups", "backup_kpis"}
            for table in ("migration_events", "retention_log"):
                assert sa.inspect(conn).has_table(table, schema=schema)
            event_checks = sa.inspect(conn).get_check_constraints("migration_events", schema=schema)
            assert [c["name"] for c in event_checks] == ["ck_migration_events_status"]
            checks = {c["name"] for c in sa.inspect(conn).get_check_constraints("backup_history", schema=schema)}
            assert checks == {
                "ck_backup_history_status",
                "ck_backup_history_verification_status",
                "ck_backup_history_type",
                "ck_backup_history_standby_status",
            }
    finally:
        engine.dispose()


def test_migrations_reach_head_and_match_models(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        store.migrate()
    with HistoryStore(history_url) as store:
        store.migrate()  # a second process start finds the schema at head
    _assert_schema_at_head(history_url)


def test_concurrent_first_use_migrates_once(history_url: str) -> None:
    def first_use(_: int) -> int:
        with HistoryStore(history_url) as store:
            return len(store.list())

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(first_use, range(4))) == [0, 0, 0, 0]


def test_start_complete_verify_round_trip(store: HistoryStore) -> None:
    started = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    record = store.start(target="app", type="daily", dagster_run_id="run-1", started_at=started)
    assert (record.status, record.verification_status, record.timestamp) == (RUNNING, "pending", started)
    assert record.retention_until == started + timedelta(days=30)

    done = store.complete(record.id, finished_at=started + timedelta(seconds=5), **COMPLETE_ARGS)
    assert done.status == COMPLETED
    assert done.size_mb == 3.5
    assert done.row_counts == COMPLETE_ARGS["row_counts"]
    assert done.finished_at == started + timedelta(seconds=5)
    assert store.complete(record.id, **COMPLETE_ARGS) == done  # a retried step changes nothing

    verified = store.set_verification(record.id, VERIFIED, detail="restored into scratch db")
    assert verified.verification_status == VERIFIED and verified.verified_at is not None
    assert store.get(record.id) == verified
    as_dict = verified.to_dict()
    assert as_dict["timestamp"] == "2025-01-02T03:04:05.123456+00:00"
    assert as_dict["sha256"] == SHA


def test_list_and_latest_newest_first(store: HistoryStore) -> None:
    base = datetime(2025, 3, 1, tzinfo=UTC)
    ids = []
    for day in range(3):
        record = store.start(target="app", type="daily", started_at=base + timedelta(days=day))
        store.complete(record.id, **COMPLETE_ARGS)
        ids.append(record.id)
    failed = store.start(target="app", type="manual", started_at=base + timedelta(days=5))
    store.fail(failed.id, "pg_dump exited 1")
    other = store.start(target="other", type="pre-restore", started_at=base + timedelta(days=9))

    assert [r.id for r in store.list(target="app")] == [failed.id, *reversed(ids)]
    assert [r.id for r in store.list()][:2] == [other.id, failed.id]
    assert [r.id for r in store.list(target="app", status=COMPLETED, limit=2)] == [ids[2], ids[1]]
    assert store.latest("app").id == ids[2]
    assert store.latest("app", status=None).id == failed.id
    assert store.latest("other") is None


def test_start_is_idempotent_per_run_and_target(store: HistoryStore) -> None:
    first = store.start(target="app", type="daily", dagster_run_id="run-42")
    store.fail(first.id, "network blip")
    again = store.start(target="app", type="daily", dagster_run_id="run-42")
    assert again == store.get(first.id) and again.status == FAILED
    other_target = store.start(target="billing", type="daily", dagster_run_id="run-42")
    assert other_target.id != first.id
    store.start(target="app", type="manual")
    store.start(target="app", type="manual")  # no run id: every call is a new attempt
    assert len(store.list(target="app")) == 3
    # the retry of the failed op then succeeds on the same row
    assert store.complete(first.id, **COMPLETE_ARGS).status == COMPLETED
    assert store.get(first.id).error is None


def test_retention_days_override(store: HistoryStore) -> None:
    started = datetime(2025, 6, 30, 23, 0, tzinfo=UTC)
    record = store.start(target="app", type="pre-migration", started_at=started, retention_days=90)
    assert record.retention_until - record.timestamp == timedelta(days=90)


def test_error_is_stored_redacted(store: HistoryStore) -> None:
    record = store.start(target="app", type="daily")
    failed = store.fail(record.id, "could not connect to postgresql://u:secretpw@h/db: timeout")
    assert failed.status == FAILED
    assert "secretpw" not in failed.error
    assert "postgresql://u:***@h/db" in failed.error
    assert failed.duration_seconds is not None and failed.finished_at >= failed.timestamp


def test_completed_backup_cannot_fail(store: HistoryStore) -> None:
    record = store.start(target="app", type="daily")
    store.complete(record.id, **COMPLETE_ARGS)
    with pytest.raises(ValueError, match="cannot become failed"):
        store.fail(record.id, "upload of the manifest failed")
    assert store.set_verification(record.id, "failed", "checksum mismatch").status == COMPLETED


def test_invalid_input_rejected(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="backup type"):
        store.start(target="app", type="hourly")
    with pytest.raises(ValueError, match="naive datetime"):
        store.start(target="app", type="daily", started_at=datetime(2025, 1, 1))
    with pytest.raises(KeyError, match="no backup with id 'missing'"):
        store.get("missing")
    running = store.start(target="app", type="daily")
    with pytest.raises(ValueError, match="only completed backups"):
        store.set_verification(running.id, VERIFIED)
    assert store.find_by_run("nope", "app") is None


def test_recent_backups_view(store: HistoryStore, history_url: str) -> None:
    now = datetime.now(UTC)
    old = store.start(target="app", type="daily", started_at=now - timedelta(days=2))
    new = store.start(target="app", type="manual", started_at=now - timedelta(hours=1))
    store.complete(new.id, **COMPLETE_ARGS)
    engine = sa.create_engine(normalize_history_url(history_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM recent_backups")).mappings().all()
    finally:
        engine.dispose()
    assert [row["id"] for row in rows] == [new.id, old.id]
    assert set(rows[0]) == {
        "id", "timestamp", "target", "type", "size_mb", "status", "verification_status", "retention_until"
    }
    assert float(rows[0]["size_mb"]) == 3.5


def test_seed_queries_run_verbatim_on_postgresql(pg_history_url: str) -> None:
    now = datetime.now(UTC)
    with HistoryStore(pg_history_url) as store:
        expiring = store.start(target="app", type="daily", started_at=now - timedelta(days=25))
        store.complete(expiring.id, **COMPLETE_ARGS)
        fresh = store.start(target="app", type="manual", started_at=now - timedelta(days=1))
        store.complete(fresh.id, **{**COMPLETE_ARGS, "size_bytes": 1536 * 1024})
        broken = store.start(target="app", type="daily", started_at=now - timedelta(hours=2))
        store.fail(broken.id, "disk full")

    with psycopg.connect(_psycopg_dsn(pg_history_url), autocommit=True) as conn:
        latest, recent, expiring_soon, stats, update = (conn.execute(q) for q in SEED_QUERIES)
        latest_rows = latest.fetchall()
        assert [row[1] for row in latest_rows] == ["daily", "manual", "daily"]
        assert latest_rows[0][0].tzinfo is not None
        assert {row[0] for row in recent.fetchall()} == {fresh.id, broken.id}
        soon = expiring_soon.fetchall()
        assert len(soon) == 1 and timedelta(days=4) < soon[0][4] < timedelta(days=6)
        success_rate, total, avg_size = stats.fetchone()
        assert (round(float(success_rate), 2), total, round(float(avg_size), 2)) == (66.67, 3, 2.5)
        assert update.rowcount == 0
        real_id_update = SEED_QUERIES[4].replace("backup-id-here", expiring.id)
        assert conn.execute(real_id_update).rowcount == 1

    with HistoryStore(pg_history_url) as store:
        extended = store.get(expiring.id).retention_until
    assert timedelta(days=89) < extended - now < timedelta(days=91)


def test_postgres_url_forms_are_accepted(pg_history_url: str) -> None:
    plain = pg_history_url.replace("postgresql+psycopg://", "postgres://", 1)
    assert normalize_history_url(plain).drivername == "postgresql+psycopg"
    with HistoryStore(plain) as store:
        assert store.list() == []


def test_default_history_url(tmp_path) -> None:
    assert default_history_url({"BACKUP_HISTORY_URL": "postgresql://h/db"}) == "postgresql://h/db"
    assert default_history_url({"DAGSTER_HOME": str(tmp_path)}) == f"sqlite:///{tmp_path}/backup_history.sqlite"
    assert default_history_url({}).endswith("/.backup_pipeline/backup_history.sqlite")


# --- revision 0002: restore drills, standby copies, rows rebuilt from manifests ---

# backup_history as revision 0001 left it, enough of it to write rows the way 0001-era code did.
_history_0001 = sa.table(
    "backup_history",
    sa.column("id", sa.String()),
    sa.column("timestamp", UTCDateTime()),
    sa.column("type", sa.String()),
    sa.column("size_mb", sa.Numeric(14, 2, asdecimal=False)),
    sa.column("status", sa.String()),
    sa.column("verification_status", sa.String()),
    sa.column("retention_until", UTCDateTime()),
    sa.column("target", sa.String()),
    sa.column("sha256", sa.String()),
    sa.column("row_counts", sa.JSON()),
    sa.column("dagster_run_id", sa.String()),
    sa.column("finished_at", UTCDateTime()),
)
OLD_ID = "11111111-2222-3333-4444-555555555555"
OLD_STARTED = datetime(2025, 11, 30, 2, 0, tzinfo=UTC)


def _migrate_to(history_url: str, revision: str, *, down: bool = False) -> None:
    """Run `alembic upgrade/downgrade <revision>` the way the store does, minus the lock."""
    engine = sa.create_engine(normalize_history_url(history_url))
    try:
        if (path := sqlite_path(engine.url)) is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        config = alembic_config(engine.url)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def _execute(history_url: str, statement: sa.Executable | str) -> list[sa.RowMapping]:
    engine = sa.create_engine(normalize_history_url(history_url))
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement) if isinstance(statement, str) else statement)
            return list(result.mappings()) if result.returns_rows else []
    finally:
        engine.dispose()


def _columns(history_url: str) -> list[dict]:
    engine = sa.create_engine(normalize_history_url(history_url))
    try:
        with engine.connect() as conn:
            return sa.inspect(conn).get_columns("backup_history")
    finally:
        engine.dispose()


def _manifest(backup_id: str = "0b0c3e8e-1d5f-4b61-9d0e-2a4f7b9d6c11", **overrides) -> dict:
    """A manifest as core.backup.build_manifest writes it."""
    manifest = {
        "format_version": 1,
        "backup_id": backup_id,
        "target": "app",
        "type": "daily",
        "database": "app",
        "started_at": "2025-12-01T02:00:00.250000+00:00",
        "finished_at": "2025-12-01T02:00:07.750000+00:00",
        "duration_seconds": 7.5,
        "server_version": "15.20",
        "pg_dump_version": "15.20",
        "format": "custom",
        "compression": {"codec": "zstd", "level": 3},
        "archive": {"key": "app/2025/12/01/x.dump.zst", "size_bytes": 5 * 1024 * 1024, "sha256": SHA},
        "globals": None,
        "row_counts": {"public.users": 10},
        "dagster_run_id": "run-7",
        "warnings": [],
    }
    manifest.update(overrides)
    return manifest


MANIFEST_URIS = {
    "manifest_uri": "s3://bucket/app/2025/12/01/x.manifest.json",
    "archive_uri": "s3://bucket/app/2025/12/01/x.dump.zst",
    "globals_uri": None,
}


def _completed(store: HistoryStore, target: str = "app", started_at: datetime | None = None):
    record = store.start(target=target, type="daily", started_at=started_at)
    return store.complete(record.id, **COMPLETE_ARGS)


def test_upgrade_from_0001_keeps_rows_and_view(history_url: str) -> None:
    _migrate_to(history_url, "0001")
    _execute(
        history_url,
        sa.insert(_history_0001).values(
            id=OLD_ID,
            timestamp=OLD_STARTED,
            type="pre-restore",
            size_mb=3.5,
            status="completed",
            verification_status="checksum_ok",
            retention_until=OLD_STARTED + timedelta(days=30),
            target="app",
            sha256=SHA,
            row_counts={"public.users": 10},
            dagster_run_id="run-old",
            finished_at=OLD_STARTED + timedelta(seconds=9),
        ),
    )

    with HistoryStore(history_url) as store:
        old = store.get(OLD_ID)  # first use upgrades in place
        assert (old.status, old.verification_status, old.type, old.size_mb) == (
            COMPLETED, "checksum_ok", "pre-restore", 3.5
        )
        assert (old.timestamp, old.finished_at, old.row_counts) == (
            OLD_STARTED, OLD_STARTED + timedelta(seconds=9), {"public.users": 10}
        )
        assert old.drilled_at is None and old.drill_detail is None and old.standby_status is None
        assert old.source is None
        assert store.find_by_run("run-old", "app") == old
        drilled = store.record_drill(
            OLD_ID, passed=True, detail={"reason": "ok"}, drill_seconds=1.5, restored_bytes=8192
        )
        assert drilled.verification_status == VERIFIED
    _assert_schema_at_head(history_url)

    rows = _execute(history_url, "SELECT * FROM recent_backups")
    assert [row["id"] for row in rows] == [OLD_ID]
    # the constraints of 0001 survived the SQLite table rebuild, and 0002's own is in force
    for bad in ("status = 'bogus'", "type = 'hourly'", "verification_status = 'maybe'", "standby_status = 'half'"):
        with pytest.raises(sa.exc.IntegrityError):
            _execute(history_url, f"UPDATE backup_history SET {bad} WHERE id = '{OLD_ID}'")


def test_downgrade_to_0001_and_back_keeps_rows(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        record = _completed(store)
        store.record_standby(record.id, ok=True)
    _migrate_to(history_url, "0001", down=True)
    columns = {c["name"] for c in _columns(history_url)}
    assert "standby_status" not in columns and "drill_seconds" not in columns
    assert [row["id"] for row in _execute(history_url, "SELECT * FROM recent_backups")] == [record.id]
    with HistoryStore(history_url) as store:
        again = store.get(record.id)
    assert again.status == COMPLETED and again.standby_status is None
    _assert_schema_at_head(history_url)


def test_record_drill_pass_then_fail(store: HistoryStore) -> None:
    record = _completed(store)
    drilled_at = datetime(2025, 12, 2, 4, 0, tzinfo=UTC)
    detail = {
        "reason": "restored 2 tables, row counts match",
        "skipped_extensions": ["timescaledb"],
        "mismatches": [],
        "scratch": "postgresql://drill:hunter22@db/scratch",
    }
    passed = store.record_drill(
        record.id, passed=True, detail=detail, drill_seconds=12.5, restored_bytes=9_000_000_000, drilled_at=drilled_at
    )
    assert (passed.status, passed.verification_status) == (COMPLETED, VERIFIED)
    assert passed.verification_detail == "restored 2 tables, row counts match"
    assert (passed.drill_seconds, passed.restored_bytes) == (12.5, 9_000_000_000)
    assert passed.drilled_at == passed.verified_at == drilled_at
    assert passed.drill_detail["skipped_extensions"] == ["timescaledb"]
    assert passed.drill_detail["scratch"] == "postgresql://drill:***@db/scratch"
    assert store.get(record.id) == passed
    as_dict = passed.to_dict()
    assert as_dict["drilled_at"] == "2025-12-02T04:00:00+00:00"
    assert json.loads(json.dumps(as_dict))["drill_detail"] == passed.drill_detail

    failed = store.record_drill(
        record.id,
        passed=False,
        detail={"reason": "password=hunter22 rejected", "failed_assertions": ["public.users: 10 != 9"]},
        drill_seconds=None,
        restored_bytes=None,
    )
    assert (failed.status, failed.verification_status) == (COMPLETED, VERIFICATION_FAILED)
    assert failed.verification_detail == "password=*** rejected"
    assert failed.drill_detail == {"reason": "password=*** rejected", "failed_assertions": ["public.users: 10 != 9"]}
    assert failed.drill_seconds is None and failed.restored_bytes is None
    assert failed.drilled_at > drilled_at

    no_reason = store.record_drill(record.id, passed=True, detail={}, drill_seconds=1.0, restored_bytes=1)
    assert no_reason.verification_detail == "restore drill passed"


def test_record_drill_and_standby_only_on_completed_rows(store: HistoryStore) -> None:
    failed = store.start(target="app", type="daily")
    store.fail(failed.id, "pg_dump exited 1")
    running = store.start(target="app", type="daily")
    for backup_id, status in ((failed.id, "failed"), (running.id, "running")):
        with pytest.raises(ValueError, match=f"is {status}; only completed backups can be drilled"):
            store.record_drill(backup_id, passed=True, detail={}, drill_seconds=1.0, restored_bytes=1)
        with pytest.raises(ValueError, match="only completed backups can go to the standby"):
            store.record_standby(backup_id, ok=True)
    assert store.get(failed.id).drilled_at is None and store.get(running.id).standby_status is None
    with pytest.raises(KeyError):
        store.record_drill("missing", passed=True, detail={}, drill_seconds=None, restored_bytes=None)
    done = _completed(store)
    with pytest.raises(ValueError, match="drill_seconds"):
        store.record_drill(done.id, passed=True, detail={}, drill_seconds=-1.0, restored_bytes=None)
    with pytest.raises(ValueError, match="naive datetime"):
        store.record_drill(
            done.id, passed=True, detail={}, drill_seconds=1.0, restored_bytes=None, drilled_at=datetime(2025, 1, 1)
        )
    with pytest.raises(ValueError, match="JSON"):
        store.record_drill(done.id, passed=True, detail={"x": float("nan")}, drill_seconds=1.0, restored_bytes=None)
    assert store.get(done.id).verification_status == "pending"


def test_record_standby(store: HistoryStore) -> None:
    record = _completed(store)
    synced_at = datetime(2025, 12, 3, 1, 2, 3, tzinfo=UTC)
    synced = store.record_standby(record.id, ok=True, synced_at=synced_at)
    assert (synced.standby_status, synced.standby_synced_at, synced.standby_detail) == (STANDBY_SYNCED, synced_at, None)
    detail = "pg_restore on postgresql://s:topsecret@standby/app: disk full"
    failed = store.record_standby(record.id, ok=False, detail=detail)
    assert failed.standby_status == STANDBY_FAILED
    assert failed.standby_detail == "pg_restore on postgresql://s:***@standby/app: disk full"
    assert failed.standby_synced_at > synced_at
    assert failed.status == COMPLETED and failed.verification_status == "pending"


def _drill(store: HistoryStore, backup_id: str, *, passed: bool, at: datetime):
    return store.record_drill(backup_id, passed=passed, detail={}, drill_seconds=1.0, restored_bytes=1, drilled_at=at)


def test_latest_verified_and_last_drill(store: HistoryStore) -> None:
    base = datetime(2025, 12, 1, tzinfo=UTC)
    oldest, middle, newest = (_completed(store, started_at=base + timedelta(days=d)) for d in range(3))
    _completed(store, target="billing")
    assert store.latest_verified("app") is None and store.last_drill("app") is None

    _drill(store, oldest.id, passed=True, at=base + timedelta(days=5))
    _drill(store, middle.id, passed=True, at=base + timedelta(days=3))
    _drill(store, newest.id, passed=False, at=base + timedelta(days=4))
    store.set_verification(newest.id, "checksum_ok")  # not a drill: does not count as verified
    assert store.latest_verified("app").id == middle.id  # newest backup that passed, not newest drill
    assert store.last_drill("app").id == oldest.id  # drilled last, on day 5
    assert store.latest_verified("billing") is None and store.last_drill("billing") is None

    _drill(store, newest.id, passed=True, at=base + timedelta(days=6))
    assert store.latest_verified("app").id == newest.id
    assert store.last_drill("app").id == newest.id


def test_upsert_from_manifest_inserts_completed_row(store: HistoryStore) -> None:
    manifest = _manifest()
    record = store.upsert_from_manifest(manifest, **MANIFEST_URIS)
    started = datetime(2025, 12, 1, 2, 0, 0, 250000, tzinfo=UTC)
    assert record.id == manifest["backup_id"]
    assert (record.status, record.verification_status, record.source) == (COMPLETED, "pending", SOURCE_MANIFEST)
    assert (record.target, record.type, record.timestamp) == ("app", "daily", started)
    assert record.finished_at == started + timedelta(seconds=7.5)
    assert record.retention_until == started + timedelta(days=30)
    assert (record.size_bytes, record.size_mb, record.sha256) == (5 * 1024 * 1024, 5.0, SHA)
    assert (record.compression, record.server_version, record.pg_dump_version) == ("zstd", "15.20", "15.20")
    assert (record.row_counts, record.duration_seconds, record.dagster_run_id) == ({"public.users": 10}, 7.5, "run-7")
    assert (record.manifest_uri, record.archive_uri, record.globals_uri) == (
        MANIFEST_URIS["manifest_uri"], MANIFEST_URIS["archive_uri"], None
    )
    assert record.error is None and record.verified_at is None and record.drilled_at is None
    assert store.latest("app") == record
    json.dumps(record.to_dict())

    unrun = _manifest("0b0c3e8e-0000-0000-0000-000000000090", dagster_run_id=None)
    ninety = store.upsert_from_manifest(unrun, **MANIFEST_URIS, retention_days=90)
    assert ninety.retention_until - ninety.timestamp == timedelta(days=90) and ninety.dagster_run_id is None


def test_upsert_from_manifest_is_idempotent(store: HistoryStore) -> None:
    manifest = _manifest()
    first = store.upsert_from_manifest(manifest, **MANIFEST_URIS)
    drilled = store.record_drill(first.id, passed=True, detail={}, drill_seconds=2.0, restored_bytes=10)
    changed = _manifest(type="manual", archive={"size_bytes": 1, "sha256": "cd" * 32})
    assert store.upsert_from_manifest(changed, **MANIFEST_URIS) == drilled  # existing row returned unchanged
    assert store.upsert_from_manifest(manifest, **MANIFEST_URIS) == drilled
    assert len(store.list()) == 1

    # a row the pipeline wrote itself is never overwritten from its manifest
    own = _completed(store)
    assert store.upsert_from_manifest(_manifest(own.id), **MANIFEST_URIS) == own


def test_upsert_from_manifest_concurrently(history_url: str) -> None:
    manifest = _manifest()

    def rebuild(_: int):
        with HistoryStore(history_url) as store:
            return store.upsert_from_manifest(manifest, **MANIFEST_URIS)

    with HistoryStore(history_url) as store:
        store.migrate()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        records = list(pool.map(rebuild, range(4)))
    assert len({r.id for r in records}) == 1 and records[0] == records[3]
    with HistoryStore(history_url) as store:
        assert len(store.list()) == 1


def test_upsert_from_manifest_yields_a_taken_run_id(store: HistoryStore) -> None:
    retry = store.start(target="app", type="daily", dagster_run_id="run-7")
    rebuilt = store.upsert_from_manifest(_manifest(), **MANIFEST_URIS)
    assert rebuilt.id != retry.id and rebuilt.dagster_run_id is None
    assert store.find_by_run("run-7", "app") == retry
    other_target = store.upsert_from_manifest(
        _manifest("0b0c3e8e-0000-0000-0000-0000000000bb", target="billing"), **MANIFEST_URIS
    )
    assert other_target.dagster_run_id == "run-7"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"started_at": "2025-12-01T02:00:00"}, "no UTC offset"),
        ({"started_at": "yesterday"}, "not an ISO-8601 timestamp"),
        ({"type": "hourly"}, "backup type 'hourly'"),
        ({"archive": {"size_bytes": 1}}, "lacks 'sha256'"),
        ({"archive": None}, "malformed"),
        ({"backup_id": "x" * 40}, "backup_id"),
    ],
)
def test_upsert_from_manifest_rejects_bad_manifests(sqlite_history_url: str, overrides: dict, message: str) -> None:
    with HistoryStore(sqlite_history_url) as store:
        with pytest.raises(ValueError, match=message):
            store.upsert_from_manifest(_manifest(**overrides), **MANIFEST_URIS)
        assert store.list() == []


def test_manifest_timestamps_with_z_and_other_offsets(store: HistoryStore) -> None:
    record = store.upsert_from_manifest(
        _manifest(started_at="2025-12-01T03:00:00+01:00", finished_at="2025-12-01T02:00:05Z", duration_seconds=None),
        **MANIFEST_URIS,
    )
    assert record.timestamp == datetime(2025, 12, 1, 2, 0, tzinfo=UTC)
    assert record.duration_seconds == 5.0
