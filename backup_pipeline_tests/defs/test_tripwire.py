"""The row-count tripwire on real servers: a mass DELETE between two backups warns, alerts and pins."""

from datetime import UTC, datetime, timedelta

import psycopg
import dagster as dg

from backup_pipeline.cli import main
from backup_pipeline.core.history import KEEP_FOREVER
from backup_pipeline.core.tripwire import PIN_DETAIL_PREFIX, compare_counts
from backup_pipeline.launch import run_retention
from backup_pipeline_tests.defs.test_backup_job import run_backup

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def _checks(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "row_counts_plausible"]


def test_thresholds():
    before = {"a": 1000, "b": 999, "c": 5000, "gone": 3}
    drops = compare_counts(before, {"a": 499, "b": 0, "c": 2500}, drop_share=0.5, min_rows=1000)
    assert [(d.table, d.after) for d in drops] == [("a", 499), ("gone", None)]  # b is too small, c lost exactly half
    assert drops[0].describe() == "a 1000 -> 499 rows (-50%)"
    assert compare_counts(before, {"a": 900, "b": 500, "c": 2600, "gone": 3}, drop_share=0.5, min_rows=0) == []


def test_mass_delete_trips_the_check_alerts_and_pins_the_earlier_backup(
    configure, backup_env, dagster_instance, source_dsn, alert_env, capsys
):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False, "min_good_backups": 1}}, {"SHOP_URL": source_dsn})
    with psycopg.connect(source_dsn, autocommit=True) as pg:
        pg.execute("CREATE TABLE public.events AS SELECT g AS id FROM generate_series(1, 3000) g")
        pg.execute("CREATE TABLE public.scratch AS SELECT 1 AS x")
    first = run_backup(dagster_instance, dsn_env="SHOP_URL")
    assert first.success
    [check] = _checks(first)
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert alert_env.webhook_bodies() == []

    with psycopg.connect(source_dsn, autocommit=True) as pg:
        pg.execute("DELETE FROM public.events WHERE id > 100")
        pg.execute("DROP TABLE public.scratch")
    second = run_backup(dagster_instance, dsn_env="SHOP_URL")
    assert second.success, "a tripped wire warns; the backup itself is good"
    history = backup_env.history()
    old, new = (history.find_by_run(r.run_id, "shop") for r in (first, second))
    [check] = _checks(second)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["compared_with"].value == old.id
    [body] = alert_env.webhook_bodies()
    assert body["kind"] == "row_counts_dropped" and body["backup_id"] == new.id
    assert "public.events 3000 -> 100 rows (-97%)" in body["text"] and "public.scratch disappeared" in body["text"]
    assert f"keep {old.id} --days N" in body["text"]

    old = history.get(old.id)
    assert old.retention_until == KEEP_FOREVER and old.retention_detail.startswith(PIN_DETAIL_PREFIX)
    history.set_retention(new.id, PAST)  # force: everything else is past its date
    assert run_retention(dry_run=False).success
    assert history.get(old.id).status == "completed", "retention expired the pinned backup"

    assert main(["keep", old.id, "--days", "1"]) == 0  # release the pin
    released = history.get(old.id)
    assert released.retention_until < datetime.now(UTC) + timedelta(days=2) and released.retention_detail is None
    third = run_backup(dagster_instance, dsn_env="SHOP_URL")
    assert _checks(third)[0].passed and len(alert_env.webhook_bodies()) == 1  # compared with the low backup now
