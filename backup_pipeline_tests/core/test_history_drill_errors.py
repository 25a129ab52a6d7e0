"""Drills that could not run, in the history: recorded beside the verdict, never as one (both backends)."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from backup_pipeline.core.history import HistoryStore, normalize_history_url
from backup_pipeline_tests.core.test_history import (
    COMPLETE_ARGS,
    _completed,
    _migrate_to,
)

LEAKY = "cannot reach endpoint http://key:S3cretPa55@127.0.0.1:9/ while downloading s3://b/x.dump.zst"


@pytest.fixture
def store(history_url: str):
    with HistoryStore(history_url) as store:
        yield store


@pytest.mark.parametrize("verdict", ["pending", "checksum_ok", "verified", "failed"])
def test_a_drill_error_keeps_the_verdict_and_counts_no_drill(store: HistoryStore, verdict: str) -> None:
    record = _completed(store)
    drilled_at = datetime.now(UTC) - timedelta(days=1)
    if verdict in ("verified", "failed"):
        store.record_drill(record.id, passed=verdict == "verified", detail={"reason": "earlier drill"},
                           drill_seconds=2.0, restored_bytes=10, drilled_at=drilled_at)
    elif verdict == "checksum_ok":
        store.set_verification(record.id, verdict, "sha256 matches")
    before, kpis = store.get(record.id), store.kpis("app")

    after = store.record_drill_error(record.id, LEAKY)

    assert after.verification_status == verdict
    assert (after.drilled_at, after.drill_detail, after.verification_detail) == (
        before.drilled_at, before.drill_detail, before.verification_detail)
    assert "S3cretPa55" not in after.drill_error and "127.0.0.1" in after.drill_error
    assert abs((after.drill_error_at - datetime.now(UTC)).total_seconds()) < 60
    assert store.kpis("app") == kpis  # neither a passing nor a failing drill


def test_the_next_drill_that_runs_clears_the_error(store: HistoryStore) -> None:
    record = _completed(store)
    store.record_drill_error(record.id, "no space left on the stage")
    passed = store.record_drill(record.id, passed=True, detail={"reason": "ok"}, drill_seconds=1.0, restored_bytes=1)
    assert (passed.verification_status, passed.drill_error, passed.drill_error_at) == ("verified", None, None)


def test_only_completed_backups_take_a_drill_error(store: HistoryStore) -> None:
    running = store.start(target="app", type="daily")
    with pytest.raises(ValueError, match="is running; only completed backups can be drilled"):
        store.record_drill_error(running.id, "x")
    with pytest.raises(ValueError, match="needs a reason"):
        store.record_drill_error(_completed(store).id, "")


def test_downgrade_to_0003_drops_the_columns_and_keeps_rows_and_views(history_url: str) -> None:
    with HistoryStore(history_url) as store:
        record = _completed(store)
        store.record_drill_error(record.id, "server would not start")
    _migrate_to(history_url, "0003", down=True)
    engine = sa.create_engine(normalize_history_url(history_url))
    try:
        with engine.connect() as conn:
            schema = "public" if conn.dialect.name == "postgresql" else None
            columns = {c["name"] for c in sa.inspect(conn).get_columns("backup_history", schema=schema)}
            assert not {"drill_error", "drill_error_at"} & columns
            assert set(sa.inspect(conn).get_view_names(schema=schema)) == {"recent_backups", "backup_kpis"}
            assert conn.execute(sa.text("SELECT total_30d FROM backup_kpis")).scalar() == 1
    finally:
        engine.dispose()
    with HistoryStore(history_url) as store:  # first use upgrades again
        again = store.get(record.id)
        assert (again.status, again.drill_error, again.sha256) == ("completed", None, COMPLETE_ARGS["sha256"])
