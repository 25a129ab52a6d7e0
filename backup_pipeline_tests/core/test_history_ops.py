"""Revision 0003 of the backup history: migration events, retention and the KPI view.

Like test_history.py, every backend-neutral test runs on SQLite and on
PostgreSQL 15 against real databases; the seed's operator SQL is run
verbatim on PostgreSQL.
"""

import concurrent.futures
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from backup_pipeline.core.errors import MigrationEventNotFound
from backup_pipeline.core.history import (
    COMPLETED,
    EXPIRED,
    KEEP_FOREVER,
    MIGRATION_COMPLETED,
    MIGRATION_FAILED,
    MIGRATION_LAUNCHED,
    MIGRATION_PENDING,
    RETENTION_DELETE_OBJECT,
    RETENTION_EXPIRE,
    VERIFIED,
    HistoryStore,
    MigrationEvent,
)
from backup_pipeline.core.history.models import UTCDateTime
from backup_pipeline_tests.core.test_history import (
    COMPLETE_ARGS,
    SEED_QUERIES,
    _assert_schema_at_head,
    _columns,
    _drill,
    _execute,
    _migrate_to,
    _psycopg_dsn,
)

MIB = 1024 * 1024


@pytest.fixture
def store(history_url: str):
    with HistoryStore(history_url) as store:
        yield store


def _completed(store: HistoryStore, started_at: datetime, target: str = "app", **overrides):
    record = store.start(target=target, type="daily", started_at=started_at)
    return store.complete(record.id, **{**COMPLETE_ARGS, **overrides})


def _failed(store: HistoryStore, started_at: datetime, target: str = "app"):
    record = store.start(target=target, type="daily", started_at=started_at)
    return store.fail(record.id, "pg_dump exited 1")


# --- upgrading a 0002 database ---

# backup_history as revision 0002 left it, enough of it to write a drilled, synced row.
_history_0002 = sa.table(
    "backup_history",
    sa.column("id", sa.String()),
    sa.column("timestamp", UTCDateTime()),
    sa.column("type", sa.String()),
    sa.column("size_mb", sa.Numeric(14, 2, asdecimal=False)),
    sa.column("status", sa.String()),
    sa.column("verification_status", sa.String()),
    sa.column("retention_until", UTCDateTime()),
    sa.column("target", sa.String()),
    sa.column("archive_uri", sa.String()),
    sa.column("duration_seconds", sa.Float()),
    sa.column("drilled_at", UTCDateTime()),
    sa.column("drill_seconds", sa.Float()),
    sa.column("standby_status", sa.String()),
)
OLD_ID = "22222222-3333-4444-5555-666666666666"


def test_upgrade_from_0002_keeps_rows_and_views(history_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    started = now - timedelta(days=2)
    _migrate_to(history_url, "0002")
    _execute(
        history_url,
        sa.insert(_history_0002).values(
            id=OLD_ID,
            timestamp=started,
            type="daily",
            size_mb=3.5,
            status="completed",
            verification_status="verified",
            retention_until=started + timedelta(days=30),
            target="app",
            archive_uri="s3://bucket/app/x.dump.zst",
            duration_seconds=4.0,
            drilled_at=started + timedelta(hours=1),
            drill_seconds=2.5,
            standby_status="synced",
        ),
    )

    with HistoryStore(history_url) as store:
        old = store.get(OLD_ID)  # first use upgrades in place
        assert (old.status, old.verification_status, old.size_mb, old.timestamp) == (COMPLETED, VERIFIED, 3.5, started)
        assert (old.drill_seconds, old.standby_status) == (2.5, "synced")
        assert (old.expired_at, old.objects_deleted_at, old.retention_detail) == (None, None, None)
        [kpi] = store.kpis()
        assert (kpi["target"], kpi["total_30d"], kpi["completed_30d"], kpi["success_rate_30d"]) == ("app", 1, 1, 100.0)
        assert (kpi["last_backup_at"], kpi["last_drill_at"]) == (started, started + timedelta(hours=1))
        assert kpi["last_drill_passed"] is True and kpi["verified_share_30d"] == 100.0
        event = store.record_migration_event("app", "0042_add_orders")
        assert [e.id for e in store.migration_events_after(0)] == [event.id]
        assert [r.id for r in store.expiry_candidates(now + timedelta(days=60))] == [OLD_ID]
    _assert_schema_at_head(history_url)
    assert [row["id"] for row in _execute(history_url, "SELECT * FROM recent_backups")] == [OLD_ID]
    # the constraints of 0001 and 0002 are still in force, and 0003's own
    for bad in ("status = 'bogus'", "type = 'hourly'", "standby_status = 'half'"):
        with pytest.raises(sa.exc.IntegrityError):
            _execute(history_url, f"UPDATE backup_history SET {bad} WHERE id = '{OLD_ID}'")
    with pytest.raises(sa.exc.IntegrityError):
        _execute(history_url, f"UPDATE migration_events SET status = 'done' WHERE id = '{event.id}'")


def test_downgrade_to_0002_and_back_keeps_rows(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        record = _completed(store, datetime.now(UTC) - timedelta(days=1))
        store.set_retention(record.id, None)
        store.record_migration_event("app", "0042")
    _migrate_to(history_url, "0002", down=True)
    columns = {c["name"] for c in _columns(history_url)}
    assert not columns & {"expired_at", "objects_deleted_at", "retention_detail"}
    assert [row["id"] for row in _execute(history_url, "SELECT * FROM recent_backups")] == [record.id]
    with HistoryStore(history_url) as store:
        again = store.get(record.id)
        assert again.retention_until == KEEP_FOREVER and again.expired_at is None
        assert store.migration_events_after(0) == []  # the table was dropped with 0003
    _assert_schema_at_head(history_url)


# --- migration events ---


def test_record_migration_event_is_idempotent(store: HistoryStore) -> None:
    created = datetime(2025, 12, 15, 9, 30, tzinfo=UTC)
    first = store.record_migration_event("app", "0042_add_orders", created_at=created)
    assert isinstance(first, MigrationEvent)
    assert (first.target, first.migration_id, first.status, first.created_at) == (
        "app", "0042_add_orders", MIGRATION_PENDING, created
    )
    assert len(first.id) == 36 and first.seq >= 1
    assert (first.backup_id, first.dagster_run_id, first.error) == (None, None, None)

    launched = store.update_migration_event(first.id, status=MIGRATION_LAUNCHED, dagster_run_id="run-9")
    again = store.record_migration_event("app", "0042_add_orders")
    assert again == launched  # the existing event, unchanged
    assert [e.id for e in store.migration_events_after(0)] == [first.id]
    other_target = store.record_migration_event("billing", "0042_add_orders")
    assert other_target.id != first.id and other_target.seq > first.seq
    assert store.find_migration_event("app", "0042_add_orders") == launched
    assert store.find_migration_event("app", "0043") is None
    assert store.get_migration_event(first.id) == launched
    assert first.to_dict()["created_at"] == "2025-12-15T09:30:00+00:00"


def test_record_migration_event_concurrently_is_one_event(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        store.migrate()

    def record(_: int) -> MigrationEvent:
        with HistoryStore(history_url) as store:
            return store.record_migration_event("app", "0042")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        events = list(pool.map(record, range(12)))
    assert len({e.id for e in events}) == 1
    with HistoryStore(history_url) as store:
        assert len(store.migration_events_after(0)) == 1


def test_migration_events_after_orders_by_seq(store: HistoryStore) -> None:
    base = datetime(2025, 12, 1, tzinfo=UTC)
    # created_at runs backwards: the order is by seq (insertion), not by created_at
    events = [store.record_migration_event("app", f"m{i}", created_at=base - timedelta(hours=i)) for i in range(5)]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert store.migration_events_after(0) == events
    assert store.migration_events_after(events[1].seq) == events[2:]
    assert store.migration_events_after(events[-1].seq) == []
    assert store.migration_events_after(0, limit=2) == events[:2]
    store.update_migration_event(events[0].id, status=MIGRATION_LAUNCHED)
    assert [e.id for e in store.migration_events_after(0)] == [e.id for e in events]  # updates do not reorder
    with pytest.raises(ValueError, match="limit"):
        store.migration_events_after(0, limit=0)


def test_cursor_misses_no_event_inserted_concurrently(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        store.migrate()
    writers, per_writer = 4, 15
    done = threading.Event()
    seen: list[MigrationEvent] = []

    def write(n: int) -> list[str]:
        with HistoryStore(history_url) as store:
            return [store.record_migration_event(f"t{n}", f"m{i}").id for i in range(per_writer)]

    def read() -> None:
        cursor = 0
        with HistoryStore(history_url) as store:
            while True:
                finished = done.is_set()
                batch = store.migration_events_after(cursor, limit=7)
                seen.extend(batch)
                if batch:
                    cursor = batch[-1].seq
                elif finished:
                    return

    reader = threading.Thread(target=read)
    reader.start()
    with concurrent.futures.ThreadPoolExecutor(writers) as pool:
        written = [event_id for ids in pool.map(write, range(writers)) for event_id in ids]
    done.set()
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert sorted(e.id for e in seen) == sorted(written)  # nothing missed, nothing twice
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


def test_update_migration_event(store: HistoryStore) -> None:
    event = store.record_migration_event("app", "0042")
    when = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
    launched = store.update_migration_event(
        event.id, status=MIGRATION_LAUNCHED, dagster_run_id="run-1", updated_at=when
    )
    assert (launched.status, launched.dagster_run_id, launched.updated_at) == (MIGRATION_LAUNCHED, "run-1", when)
    assert launched.created_at == event.created_at and launched.seq == event.seq

    failed = store.update_migration_event(
        event.id, status=MIGRATION_FAILED, error="cannot reach postgresql://app:s3cret@db/app"
    )
    assert failed.status == MIGRATION_FAILED and failed.dagster_run_id == "run-1"  # None keeps the run id
    assert failed.error == "cannot reach postgresql://app:***@db/app"

    backup = _completed(store, datetime.now(UTC))
    retried = store.update_migration_event(event.id, status=MIGRATION_LAUNCHED, dagster_run_id="run-2")
    assert retried.error == failed.error  # kept until the event completes
    completed = store.update_migration_event(event.id, status=MIGRATION_COMPLETED, backup_id=backup.id)
    assert (completed.status, completed.backup_id, completed.dagster_run_id, completed.error) == (
        MIGRATION_COMPLETED, backup.id, "run-2", None
    )
    assert store.update_migration_event(event.id, status=MIGRATION_COMPLETED).backup_id == backup.id
    rerun = store.update_migration_event(event.id, status=MIGRATION_LAUNCHED, dagster_run_id="run-3")
    assert (rerun.status, rerun.backup_id, rerun.error) == (MIGRATION_LAUNCHED, backup.id, None)  # a re-execution
    with pytest.raises(ValueError, match="migration event status 'done'"):
        store.update_migration_event(event.id, status="done")
    with pytest.raises(KeyError, match="no migration event with id 'missing'"):
        store.update_migration_event("missing", status=MIGRATION_LAUNCHED)
    with pytest.raises(MigrationEventNotFound) as missing:
        store.get_migration_event("missing")
    assert str(missing.value).startswith("no migration event with id 'missing' in the backup history at ")
    with pytest.raises(ValueError, match="naive datetime"):
        store.record_migration_event("app", "0043", created_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="needs a target"):
        store.record_migration_event("", "0043")


# --- retention ---


def test_set_retention(store: HistoryStore) -> None:
    record = _completed(store, datetime(2025, 12, 1, tzinfo=UTC))
    forever = store.set_retention(record.id, None)
    assert forever.retention_until == KEEP_FOREVER == datetime(9999, 12, 31, tzinfo=UTC)
    until = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert store.set_retention(record.id, until).retention_until == until
    with pytest.raises(ValueError, match="naive datetime"):
        store.set_retention(record.id, datetime(2026, 3, 1))
    with pytest.raises(KeyError):
        store.set_retention("missing", None)
    store.mark_expired(record.id, objects_deleted=True)
    with pytest.raises(ValueError, match="has expired"):
        store.set_retention(record.id, None)


def test_mark_expired(store: HistoryStore, history_url: str) -> None:
    record = _completed(store, datetime.now(UTC) - timedelta(days=40))
    when = datetime(2025, 12, 20, 3, 0, tzinfo=UTC)
    expired = store.mark_expired(
        record.id, objects_deleted=False, detail="delete failed: https://u:pw@s3.example/x", expired_at=when
    )
    assert (expired.status, expired.expired_at, expired.objects_deleted_at) == (EXPIRED, when, None)
    assert expired.retention_detail == "delete failed: https://u:***@s3.example/x"
    assert expired.sha256 == record.sha256 and expired.verification_status == record.verification_status
    assert store.mark_expired(record.id, objects_deleted=False, detail="again") == expired  # idempotent

    deleted = store.mark_expired(record.id, objects_deleted=True, detail="objects deleted")
    assert deleted.expired_at == when and deleted.objects_deleted_at > when
    assert deleted.retention_detail == "objects deleted"
    assert store.mark_expired(record.id, objects_deleted=True, detail="third") == deleted
    assert store.mark_expired(record.id, objects_deleted=False) == deleted

    failed = _failed(store, datetime.now(UTC) - timedelta(days=35))
    failed_expired = store.mark_expired(failed.id, objects_deleted=True)
    assert failed_expired.status == EXPIRED and failed_expired.expired_at == failed_expired.objects_deleted_at
    assert failed_expired.error == failed.error

    running = store.start(target="app", type="daily")
    with pytest.raises(ValueError, match="is running; only completed or failed backups can expire"):
        store.mark_expired(running.id, objects_deleted=False)
    with pytest.raises(ValueError, match="has expired"):
        store.complete(record.id, **COMPLETE_ARGS)
    with pytest.raises(ValueError, match="cannot become failed"):
        store.fail(record.id, "late")
    assert [row["id"] for row in _execute(history_url, "SELECT id FROM recent_backups")] == [running.id]


def test_expiry_candidates_and_completed_backups(store: HistoryStore) -> None:
    now = datetime(2026, 1, 31, tzinfo=UTC)
    due_old = _completed(store, now - timedelta(days=45))
    due_failed = _failed(store, now - timedelta(days=40))
    not_due = _completed(store, now - timedelta(days=10))
    kept = _completed(store, now - timedelta(days=60))
    store.set_retention(kept.id, None)
    gone = _completed(store, now - timedelta(days=50))
    store.mark_expired(gone.id, objects_deleted=True)
    store.start(target="app", type="daily", started_at=now - timedelta(days=41))  # still running: never a candidate
    other = _completed(store, now - timedelta(days=31), target="billing")

    assert [r.id for r in store.expiry_candidates(now)] == [due_old.id, due_failed.id, other.id]
    assert store.expiry_candidates(now - timedelta(days=20)) == []
    with pytest.raises(ValueError, match="naive datetime"):
        store.expiry_candidates(datetime(2026, 1, 31))

    assert [r.id for r in store.completed_backups("app")] == [not_due.id, due_old.id, kept.id]
    assert [r.id for r in store.completed_backups("billing")] == [other.id]
    assert store.completed_backups("nobody") == []


def test_retention_log(store: HistoryStore) -> None:
    at = datetime(2025, 12, 20, 3, 0, tzinfo=UTC)
    first = store.log_retention(
        target="app", action=RETENTION_EXPIRE, backup_id="b1", dry_run=True, detail="older than 30 days", at=at
    )
    assert first["id"] and first["dry_run"] is True and first["at"] == at
    store.log_retention(target="billing", action="abort_multipart", object_uri="s3://bucket/billing/x.part")
    last = store.log_retention(
        target="app",
        action=RETENTION_DELETE_OBJECT,
        backup_id="b1",
        object_uri="s3://bucket/app/x.dump.zst",
        detail="password=hunter22 leaked into an error",
    )
    assert last["detail"] == "password=*** leaked into an error"

    app = store.retention_log("app")
    assert [row["action"] for row in app] == [RETENTION_DELETE_OBJECT, RETENTION_EXPIRE]  # newest first
    assert app[0] == last
    assert app[1] == first
    assert app[1]["dry_run"] is True and app[0]["dry_run"] is False and app[1]["at"] == at
    assert set(app[0]) == {"id", "at", "target", "backup_id", "action", "object_uri", "dry_run", "detail"}
    assert len(store.retention_log()) == 3 and len(store.retention_log(limit=1)) == 1
    assert store.retention_log("nobody") == []
    with pytest.raises(ValueError, match="retention action"):
        store.log_retention(target="app", action="")


# --- KPIs ---


def test_backup_kpis_view(store: HistoryStore, history_url: str) -> None:
    now = datetime.now(UTC)
    newest = _completed(store, now - timedelta(days=1), size_bytes=1 * MIB, duration_seconds=1.0)
    drilled = _completed(store, now - timedelta(days=2), size_bytes=2 * MIB, duration_seconds=2.0)
    expired = _completed(store, now - timedelta(days=3), size_bytes=3 * MIB, duration_seconds=6.0)
    store.mark_expired(expired.id, objects_deleted=True)  # still a completed attempt for the rates
    _failed(store, now - timedelta(days=4))
    old = _completed(store, now - timedelta(days=40), size_bytes=100 * MIB, duration_seconds=100.0)
    _drill(store, drilled.id, passed=True, at=now - timedelta(hours=2))
    _drill(store, old.id, passed=False, at=now - timedelta(hours=1))
    _failed(store, now - timedelta(days=40), target="billing")

    app, billing = store.kpis()
    assert app == {
        "target": "app",
        "total_30d": 4,
        "completed_30d": 3,
        "success_rate_30d": 75.0,
        "avg_size_mb_30d": 2.0,
        "avg_duration_seconds_30d": 3.0,
        "verified_share_30d": 33.33,
        "last_backup_at": newest.timestamp,
        "last_drill_at": now - timedelta(hours=1),
        "last_drill_passed": False,  # the newest drill, of the old backup, failed
    }
    assert billing == {
        "target": "billing",
        "total_30d": 0,
        "completed_30d": 0,
        "success_rate_30d": None,
        "avg_size_mb_30d": None,
        "avg_duration_seconds_30d": None,
        "verified_share_30d": None,
        "last_backup_at": None,
        "last_drill_at": None,
        "last_drill_passed": None,
    }

    _drill(store, newest.id, passed=True, at=now)
    store.start(target="app", type="manual")  # a running attempt counts as an attempt
    [app] = store.kpis("app")
    assert (app["last_drill_passed"], app["verified_share_30d"]) == (True, 66.67)
    assert (app["total_30d"], app["success_rate_30d"]) == (5, 60.0)
    assert store.kpis("nobody") == []

    rows = _execute(history_url, "SELECT * FROM backup_kpis ORDER BY target")  # usable as plain SQL
    assert [row["target"] for row in rows] == ["app", "billing"]
    assert float(rows[0]["success_rate_30d"]) == 60.0


def test_seed_queries_and_kpis_on_postgresql(pg_history_url: str) -> None:
    now = datetime.now(UTC)
    with HistoryStore(pg_history_url) as store:
        expiring = _completed(store, now - timedelta(days=25))
        forever = _completed(store, now - timedelta(days=26))
        store.set_retention(forever.id, None)
        _failed(store, now - timedelta(days=1))

    with psycopg.connect(_psycopg_dsn(pg_history_url), autocommit=True) as conn:
        for query in SEED_QUERIES:
            conn.execute(query)  # every seed query still runs verbatim
        near_expiry = conn.execute(SEED_QUERIES[2]).fetchall()
        assert [row[3] for row in near_expiry] == [expiring.retention_until]
        kpis = conn.execute("SELECT * FROM public.backup_kpis").fetchall()
        assert len(kpis) == 1 and kpis[0][0] == "app" and float(kpis[0][3]) == 66.67
        retention = conn.execute(
            "SELECT retention_until FROM public.backup_history WHERE id = %s", (forever.id,)
        ).fetchone()[0]
        assert retention == KEEP_FOREVER
