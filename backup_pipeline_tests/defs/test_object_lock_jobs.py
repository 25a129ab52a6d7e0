"""Backups into an Object Lock bucket: locked until retention_until, extended by keep, never deleted early."""

from datetime import UTC, datetime, timedelta

from backup_pipeline.cli import main
from backup_pipeline.core.backup import split_backup_uri
from backup_pipeline.core.storage import open_storage
from backup_pipeline.launch import run_backup, run_retention

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def _locks(record) -> dict[str, object]:
    out = {}
    for uri in (record.archive_uri, record.globals_uri, record.manifest_uri):
        base, key = split_backup_uri(uri)
        out[key.rsplit(".", 2)[-2] if key.endswith(".sql") else key.rsplit(".", 1)[-1]] = open_storage(base).object_lock(key)
    return out


def test_backups_are_locked_until_retention_and_retention_reports_them(
    configure, s3_env, s3_lock_bucket, source_dsn, backup_env, monkeypatch
):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False, "min_good_backups": 1,
                        "storage": f"s3://{s3_lock_bucket}/pg", "object_lock_mode": "GOVERNANCE"}},
              {"SHOP_URL": source_dsn})
    outcome, first = run_backup("shop")
    assert outcome.success, outcome.error
    history = backup_env.history()
    first = history.get(first.id)
    locks = _locks(first)
    assert set(locks) == {"zst", "roles", "json"}
    assert all(lock.mode == "GOVERNANCE" and abs(lock.until - first.retention_until) < timedelta(seconds=1)
               for lock in locks.values()), locks

    assert main(["keep", first.id, "--days", "40"]) == 0
    first = history.get(first.id)
    assert all(abs(lock.until - first.retention_until) < timedelta(seconds=1) for lock in _locks(first).values())

    outcome, second = run_backup("shop")
    assert outcome.success, outcome.error
    history.set_retention(first.id, PAST)  # the history says it may go; its objects' locks say not yet
    assert run_retention(dry_run=False).success
    assert history.get(first.id).status == "completed"
    [entry] = [e for e in history.retention_log(target="shop") if e["action"] == "locked"]
    assert entry["backup_id"] == first.id and "GOVERNANCE" in entry["detail"] and not entry["dry_run"]
    assert all(open_storage(split_backup_uri(u)[0]).exists(split_backup_uri(u)[1])
               for u in (first.archive_uri, first.globals_uri, first.manifest_uri))
