"""Backup history against real SQLite and PostgreSQL 15 databases, no mocks.

The `history_url` fixture runs each backend-neutral test on both; the seed's
operator SQL is run verbatim on PostgreSQL because users paste it as-is.
"""

import concurrent.futures
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from backup_pipeline.core.history import (
    COMPLETED,
    FAILED,
    RUNNING,
    VERIFIED,
    HistoryStore,
    default_history_url,
    normalize_history_url,
)
from backup_pipeline.core.history.migrate import head_revision
from backup_pipeline.core.history.models import metadata

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


def test_migrations_reach_head_and_match_models(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        store.migrate()
    with HistoryStore(history_url) as store:
        store.migrate()  # a second process start finds the schema at head
        engine = sa.create_engine(normalize_history_url(history_url))
    try:
        with engine.connect() as conn:
            schema = "public" if conn.dialect.name == "postgresql" else None
            opts = {"version_table_schema": schema, "include_object": _not_version_table}
            context = MigrationContext.configure(conn, opts=opts)
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, metadata) == []
            assert sa.inspect(conn).has_table("backup_history", schema=schema)
            assert set(sa.inspect(conn).get_view_names(schema=schema)) == {"recent_backups"}
    finally:
        engine.dispose()


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


@pytest.mark.pg15
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


@pytest.mark.pg15
def test_postgres_url_forms_are_accepted(pg_history_url: str) -> None:
    plain = pg_history_url.replace("postgresql+psycopg://", "postgres://", 1)
    assert normalize_history_url(plain).drivername == "postgresql+psycopg"
    with HistoryStore(plain) as store:
        assert store.list() == []


def test_default_history_url(tmp_path) -> None:
    assert default_history_url({"BACKUP_HISTORY_URL": "postgresql://h/db"}) == "postgresql://h/db"
    assert default_history_url({"DAGSTER_HOME": str(tmp_path)}) == f"sqlite:///{tmp_path}/backup_history.sqlite"
    assert default_history_url({}).endswith("/.backup_pipeline/backup_history.sqlite")
