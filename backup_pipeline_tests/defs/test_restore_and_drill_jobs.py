"""Drills, safe restores and standbys through Dagster and the CLI, on real servers."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg

from backup_pipeline.cli import main
from backup_pipeline.core.backup import split_backup_uri
from backup_pipeline.defs.drill.checks import build_checks
from backup_pipeline.definitions import defs
from backup_pipeline.launch import run_backup, run_drill, run_restore
from backup_pipeline.resources import BackupSettings
from backup_pipeline_tests.fix_pg import new_database
from backup_pipeline_tests.pgcheck import fingerprint


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_target_without_drills_is_checksum_verified_only(configure, backup_env, source_dsn):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    outcome, record = run_backup("shop")
    assert outcome.success and record.status == "completed"
    assert backup_env.history().get(record.id).verification_status == "checksum_ok"


def test_failing_assertion_fails_the_backup_run_and_leaves_no_server(configure, backup_env, source_dsn, tmp_path):
    (tmp_path / "asserts.sql").write_text("-- name: at least a million customers\nSELECT count(*) > 1000000 AS ok FROM public.customers;\n")
    configure({"shop": {"dsn_env": "SHOP_URL", "assertions": ["asserts.sql"]}}, {"SHOP_URL": source_dsn})
    outcome, record = run_backup("shop")
    assert not outcome.success and "at least a million customers" in outcome.error
    row = backup_env.history().get(record.id)
    assert row.status == "completed" and row.verification_status == "failed"
    assert row.drill_detail["assertions"][0]["ok"] is False and row.drill_detail["restorable"] is True


def test_weekly_drill_finds_backups_in_storage_after_history_is_lost(configure, backup_env, source_dsn, monkeypatch, tmp_path):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    outcome, record = run_backup("shop")
    assert outcome.success
    monkeypatch.setenv("BACKUP_HISTORY_URL", f"sqlite:///{tmp_path / 'new-history.sqlite'}")
    drilled = run_drill()
    assert drilled.success, drilled.error
    from backup_pipeline.core.history import HistoryStore

    rebuilt = HistoryStore(f"sqlite:///{tmp_path / 'new-history.sqlite'}").get(record.id)
    assert (rebuilt.status, rebuilt.verification_status, rebuilt.source) == ("completed", "verified", "manifest")
    assert rebuilt.drill_seconds > 0 and rebuilt.restored_bytes > 0
    loaded = defs()
    weekly_restore_drill = loaded.resolve_schedule_def("weekly_restore_drill")
    with dg.build_schedule_context(repository_def=loaded.get_repository_def(), scheduled_execution_time=datetime(2026, 11, 29, 4, 0, tzinfo=UTC)) as ctx:
        assert weekly_restore_drill.cron_schedule == "0 4 * * 0" and weekly_restore_drill.execution_timezone == "UTC"
        assert len(weekly_restore_drill.evaluate_tick(ctx).run_requests) == 1


def test_tampered_archive_fails_the_cli_drill(configure, backup_env, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    _, record = run_backup("shop")
    archive = Path(split_backup_uri(record.archive_uri)[0].removeprefix("file://")) / split_backup_uri(record.archive_uri)[1]
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))
    code = main(["drill", "--backup-id", record.id, "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "does not match its manifest" in err
    assert json.loads(out)["verification_status"] == "failed"
    assert backup_env.history().get(record.id).verification_status == "failed"


def test_protected_target_without_confirm_changes_nothing(configure, backup_env, source_dsn, pg_server):
    prod = new_database(pg_server.dsn())
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1), (2)")
    configure({"shop": {"dsn_env": "SHOP_URL"}, "prod": {"dsn_env": "PROD_URL", "protected": True}},
              {"SHOP_URL": source_dsn, "PROD_URL": prod})
    _, record = run_backup("shop")
    before = fingerprint(prod)
    for kwargs in ({"to_target": "prod"}, {"to_target": "prod", "confirm": "shop"}, {"to_dsn": prod}):
        outcome = run_restore(backup_id=record.id, **kwargs)
        assert not outcome.success and "protected target" in outcome.error and "confirm" in outcome.error
    assert fingerprint(prod) == before
    assert [r.type for r in backup_env.history().list()] == ["manual"]


def test_restore_into_a_non_empty_destination_takes_a_safety_backup_first(configure, backup_env, source_dsn, pg_server, capsys):
    dev = new_database(pg_server.dsn())
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch (note text); INSERT INTO scratch VALUES ('work in progress')")
    configure({"shop": {"dsn_env": "SHOP_URL"}, "dev": {"dsn_env": "DEV_URL", "restore_destination": True}},
              {"SHOP_URL": source_dsn, "DEV_URL": dev})
    _, record = run_backup("shop")
    code = main(["restore", "--latest-verified", "--target", "shop", "--to", "dev", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    safety = backup_env.history().get(result["safety_backup_id"])
    assert (safety.type, safety.target, safety.status) == ("pre-restore", "dev", "completed")
    assert safety.row_counts == {"public.scratch": 1}  # the old contents, kept before anything was written
    assert safety.finished_at < datetime.now(UTC)
    assert result["backup_id"] == record.id
    assert fingerprint(dev) == fingerprint(source_dsn)  # replaced: the old scratch table lives on in the safety backup
    assert run_drill(backup_id=safety.id).success


def test_standby_is_replaced_after_each_verified_backup(configure, backup_env, source_dsn, pg_server):
    standby = new_database(pg_server.dsn())
    configure({"shop": {"dsn_env": "SHOP_URL", "standby_dsn_env": "STANDBY_URL"}},
              {"SHOP_URL": source_dsn, "STANDBY_URL": standby})
    outcome, first = run_backup("shop")
    assert outcome.success, outcome.error
    assert _count(standby, "public.products") == 500
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.products (sku, title, price_cents) VALUES ('NEW-1', 'new', 1)")
    outcome, second = run_backup("shop")
    assert outcome.success, outcome.error
    assert _count(standby, "public.products") == 501
    row = backup_env.history().get(second.id)
    assert row.standby_status == "synced" and row.verification_status == "verified"


def test_freshness_and_drill_checks(configure, backup_env, source_dsn, dagster_instance):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    job = dg.define_asset_job("checks", selection=dg.AssetSelection.all_asset_checks())
    checks_job = dg.Definitions(
        assets=[dg.AssetSpec(["backups", "shop"])], asset_checks=[build_checks("shop")], jobs=[job],
        resources={"backup_settings": BackupSettings()},
    ).resolve_job_def("checks")

    def evaluate() -> dict[str, bool]:
        result = checks_job.execute_in_process(instance=dagster_instance, raise_on_error=False)  # blocking checks fail it
        return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}

    assert evaluate() == {"restorable": False, "row_counts_match": False, "assertions_pass": False,
                          "drill_fresh": False, "row_counts_plausible": True}
    assert run_backup("shop")[0].success
    assert all(evaluate().values())


def test_drill_fresh_expects_no_drill_of_a_target_with_drills_off(configure, backup_env, source_dsn, dagster_instance):
    configure({"ledger": {"dsn_env": "LEDGER_URL", "drill": False}}, {"LEDGER_URL": source_dsn})
    assert run_backup("ledger")[0].success
    job = dg.define_asset_job("checks", selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey(["backups", "ledger"]), "drill_fresh")))
    checks_job = dg.Definitions(
        assets=[dg.AssetSpec(["backups", "ledger"])], asset_checks=[build_checks("ledger")], jobs=[job],
        resources={"backup_settings": BackupSettings()},
    ).resolve_job_def("checks")
    [evaluation] = checks_job.execute_in_process(instance=dagster_instance).get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["limit"].value == "none: the target has drill: false"
