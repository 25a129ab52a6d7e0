"""Retention on real storage: what expires, what never does, and crash-safety."""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3

from backup_pipeline.cli import main
from backup_pipeline.core.backup import split_backup_uri
from backup_pipeline.core.config import Target
from backup_pipeline.core.history import KEEP_FOREVER
from backup_pipeline.core.liveness import PAUSE_ENV
from backup_pipeline.core.retention import RetentionPlan, apply_retention, find_incomplete, gfs_keep
from backup_pipeline.core.storage import open_storage
from backup_pipeline.launch import run_backup, run_retention
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def _objects(record) -> list[str]:
    return [u for u in (record.manifest_uri, record.archive_uri, record.globals_uri) if u]


def _exists(uri: str) -> bool:
    base, key = split_backup_uri(uri)
    return open_storage(base).exists(key)


def _three_backups(configure, backup_env, source_dsn, **target):
    configure({"shop": {"dsn_env": "SHOP_URL", **target}}, {"SHOP_URL": source_dsn})
    records = []
    for _ in range(3):
        outcome, record = run_backup("shop")
        assert outcome.success, outcome.error
        records.append(backup_env.history().get(record.id))
    return records


def test_everything_expired_still_keeps_the_newest_verified_backup(configure, backup_env, source_dsn, capsys):
    records = _three_backups(configure, backup_env, source_dsn, min_good_backups=1)
    history = backup_env.history()
    for r in records:
        history.set_retention(r.id, PAST)

    assert main(["retention", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [e["backup_id"] for e in plan["expire"]] == [records[0].id, records[1].id]
    assert plan["expire"][0]["objects"] == _objects(records[0])
    assert plan["kept"] == [{"backup_id": records[2].id, "why": "newest good backup of the target (verified)"}]
    assert all(_exists(u) for r in records for u in _objects(r)), "a dry run deleted something"
    assert {r.status for r in history.list(target="shop")} == {"completed"}

    outcome = run_retention(dry_run=False)
    assert outcome.success, outcome.error
    rows = {r.id: r for r in history.list(target="shop")}
    assert [rows[r.id].status for r in records] == ["expired", "expired", "completed"]
    assert not any(_exists(u) for r in records[:2] for u in _objects(r))
    assert all(_exists(u) for u in _objects(records[2]))
    deleted = [e["object_uri"] for e in history.retention_log(target="shop") if e["action"] == "delete_object" and not e["dry_run"]]
    assert sorted(deleted) == sorted(u for r in records[:2] for u in _objects(r))


def test_a_crash_half_way_is_finished_by_the_next_run(configure, backup_env, source_dsn):
    records = _three_backups(configure, backup_env, source_dsn, min_good_backups=1)
    history = backup_env.history()
    history.set_retention(records[0].id, PAST)
    base, manifest_key = split_backup_uri(records[0].manifest_uri)
    open_storage(base).delete(manifest_key)  # the previous run died right after deleting the manifest
    assert run_retention(dry_run=False).success
    assert history.get(records[0].id).status == "expired"
    assert not any(_exists(u) for u in _objects(records[0]))
    assert run_retention(dry_run=False).success  # and again: nothing left to do, no error


def test_a_retention_killed_after_its_first_deletion_leaves_an_expired_row_the_next_run_finishes(
        configure, backup_env, source_dsn, tmp_path, capsys):
    records = _three_backups(configure, backup_env, source_dsn, min_good_backups=1)
    history = backup_env.history()
    history.set_retention(records[0].id, PAST)
    marker = tmp_path / "deleted-one"
    cli = os.path.join(os.path.dirname(sys.executable), "backup-pipeline")
    proc = subprocess.Popen([cli, "retention"], env={**os.environ, PAUSE_ENV: f"retention-after-delete:{marker}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the retention run never reached its first deletion"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    manifest, *others = _objects(records[0])
    assert not _exists(manifest) and all(_exists(u) for u in others)  # killed between two deletions
    row = history.get(records[0].id)
    # Never `completed` without its manifest: expired first, objects still being deleted.
    assert (row.status, row.objects_deleted_at, row.retention_detail) == ("expired", None, "expired; deleting its objects")
    assert main(["list", "--json"]) == 0
    listed = {r["backup_id"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert listed.get(records[0].id, "expired") == "expired"

    assert run_retention(dry_run=False).success  # the next run resumes the deletion
    row = history.get(records[0].id)
    assert (row.status, row.retention_detail) == ("expired", "objects deleted") and row.objects_deleted_at is not None
    assert not any(_exists(u) for u in _objects(records[0]))
    assert [history.get(r.id).status for r in records[1:]] == ["completed", "completed"]


def test_marking_only_and_keeping_forever(configure, backup_env, source_dsn, capsys):
    records = _three_backups(configure, backup_env, source_dsn, delete_expired_objects=False, min_good_backups=1)
    history = backup_env.history()
    assert main(["keep", records[0].id, "--forever", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["retention_until"].startswith("9999-12-31")
    assert history.get(records[0].id).retention_until == KEEP_FOREVER
    history.set_retention(records[1].id, PAST)
    assert main(["keep", records[2].id, "--days", "60"]) == 0
    assert history.get(records[2].id).retention_until > datetime.now(UTC) + timedelta(days=85)
    assert run_retention(dry_run=False).success
    assert [history.get(r.id).status for r in records] == ["completed", "expired", "completed"]
    assert all(_exists(u) for u in _objects(records[1])), "delete_expired_objects: false must keep objects"


def test_interrupted_uploads_are_swept_after_a_day(backup_env, s3_env, s3_bucket, s3_server):
    url = f"s3://{s3_bucket}/b"
    storage = open_storage(url)
    old, recent = "shop/2026/01/01/shop_20260101T020000Z_abcdef12", f"shop/{datetime.now(UTC):%Y/%m/%d}/shop_{datetime.now(UTC):%Y%m%dT%H%M%SZ}_12345678"
    complete = "shop/2026/01/02/shop_20260102T020000Z_99999999"
    for key in (f"{old}.dump.zst", f"{old}.roles.sql", f"{recent}.dump.zst", f"{complete}.dump.zst", f"{complete}.manifest.json"):
        storage.put_bytes(b"x", key)
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=ACCESS_KEY_ID,
                          aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")
    client.create_multipart_upload(Bucket=s3_bucket, Key=f"b/{old}.manifest.json")
    plan = RetentionPlan()
    now = datetime.now(UTC) + timedelta(days=2)  # the multipart upload is two days old by then
    find_incomplete(storage, url, "shop", now, plan)
    assert sorted(u for _, u in plan.orphans) == sorted(storage.uri(f"{old}{s}") for s in (".dump.zst", ".roles.sql")) + [
        storage.uri(f"{recent}.dump.zst")]
    apply_retention(plan, backup_env.history(), lambda u: open_storage(u), dry_run=False)
    assert sorted(storage.list_keys("shop/")) == [f"{complete}.dump.zst", f"{complete}.manifest.json"]
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_grandfather_father_son_keeps_newest_of_each_period():
    target = Target(name="t", dsn_env="X", storage_url="file:///x", keep_daily=2, keep_weekly=2, keep_monthly=2)
    stamps = [datetime(2026, 11, 25, 2), datetime(2026, 11, 24, 2), datetime(2026, 11, 24, 1), datetime(2026, 11, 17, 2),
              datetime(2026, 11, 10, 2), datetime(2026, 10, 31, 2), datetime(2026, 9, 30, 2)]
    records = [SimpleNamespace(id=f"b{i}", timestamp=ts.replace(tzinfo=UTC)) for i, ts in enumerate(stamps)]
    keep = gfs_keep(records, target)
    assert set(keep) == {"b0", "b1", "b3", "b5"}
    assert keep["b0"].startswith("daily") and keep["b3"].startswith("weekly") and keep["b5"].startswith("monthly")
