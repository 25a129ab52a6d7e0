"""Retention keeps good backups: the newest good one and at least min_good_backups of them, on real storage."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from backup_pipeline.cli import main
from backup_pipeline.core.config import load_settings
from backup_pipeline.core.retention import plan_retention
from backup_pipeline.launch import run_backup, run_retention
from backup_pipeline_tests.defs.test_retention import PAST, _exists, _objects


def _backups(n: int, backup_env) -> list:
    out = []
    for _ in range(n):
        outcome, record = run_backup("shop")
        assert outcome.success, outcome.error
        out.append(backup_env.history().get(record.id))
    return out


@pytest.mark.slow  # five real backups
def test_a_target_without_drills_keeps_its_newest_three_checksummed_backups(configure, backup_env, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    history = backup_env.history()
    first = _backups(3, backup_env)
    assert {r.verification_status for r in first} == {"checksum_ok"}
    for r in first:
        history.set_retention(r.id, PAST)
    assert run_retention(dry_run=False).success
    assert [history.get(r.id).status for r in first] == ["completed"] * 3
    assert all(_exists(u) for r in first for u in _objects(r))

    records = first + _backups(2, backup_env)
    for r in records[3:]:
        history.set_retention(r.id, PAST)
    assert main(["retention", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [k["backup_id"] for k in plan["kept"]] == [r.id for r in records[2:]]
    assert {k["backup_id"]: k["why"] for k in plan["kept"]}[records[4].id] == "newest good backup of the target (checksum_ok)"
    assert run_retention(dry_run=False).success
    assert [history.get(r.id).status for r in records] == ["expired"] * 2 + ["completed"] * 3
    assert not any(_exists(u) for r in records[:2] for u in _objects(r))
    assert all(_exists(u) for r in records[2:] for u in _objects(r))


@pytest.mark.slow  # a real backup and drill
def test_a_month_of_failed_drills_never_costs_the_last_verified_backup(configure, backup_env, source_dsn):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    history = backup_env.history()
    [verified] = _backups(1, backup_env)
    assert verified.verification_status == "verified"
    now = datetime.now(UTC)
    failed = []
    for day in range(30, 0, -1):  # a daily backup for 30 days whose drill failed every time, all past retention
        row = history.start(target="shop", type="daily", started_at=now - timedelta(days=day) + timedelta(hours=1),
                            retention_days=0)
        row = history.complete(row.id, **{k: getattr(verified, k) for k in (
            "archive_uri", "globals_uri", "manifest_uri", "size_bytes", "sha256", "row_counts", "duration_seconds",
            "server_version", "pg_dump_version", "compression")})
        failed.append(history.record_drill(row.id, passed=False, detail={"reason": "row counts differ"},
                                           drill_seconds=1.0, restored_bytes=1))
    history.set_retention(verified.id, PAST)
    plan = plan_retention(history, load_settings(), now)
    assert sorted(e.backup_id for e in plan.expire) == sorted(r.id for r in failed)
    assert plan.kept == [(verified.id, "newest good backup of the target (verified)")]
