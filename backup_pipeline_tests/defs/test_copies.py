"""Second copies (3-2-1): every backup also lands, verified, at each copy; failures are recorded and alerted."""

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import build_manifest, publish, split_backup_uri
from backup_pipeline.core.drill import drill_backup
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.restore import restore_from_storage
from backup_pipeline.core.storage import open_storage
from backup_pipeline.core.storage.fallback import FallbackStorage
from backup_pipeline.launch import run_backup, run_retention


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_each_copy_gets_the_same_objects_and_a_failed_copy_is_recorded_and_alerted(
    configure, s3_env, s3_bucket, source_dsn, backup_env, tmp_path, alert_env
):
    nas = tmp_path / "nas"
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False, "min_good_backups": 1,
                        "copies": [f"file://{nas}", f"s3://{s3_bucket}/offsite", "s3://no-such-bucket-h8/x"]}},
              {"SHOP_URL": source_dsn})
    outcome, record = run_backup("shop")
    assert outcome.success, outcome.error
    record = backup_env.history().get(record.id)
    assert [(c["url"], c["state"]) for c in record.copies] == [
        (f"file://{nas}", "copied"), (f"s3://{s3_bucket}/offsite", "copied"), ("s3://no-such-bucket-h8/x", "failed")]
    assert record.copies[2]["attempts"] == 3 and "does not exist" in record.copies[2]["detail"]

    primary_root = Path(split_backup_uri(record.manifest_uri)[0].removeprefix("file://"))
    assert _files(nas) == _files(primary_root) and len(_files(nas)) == 3
    offsite = open_storage(f"s3://{s3_bucket}/offsite")
    for key, digest in _files(primary_root).items():
        assert hashlib.sha256(offsite.get_bytes(key)).hexdigest() == digest
    manifest = json.loads(next(nas.rglob("*.manifest.json")).read_text())
    assert manifest["copies"][0] == f"file://{nas}"

    [body] = [b for b in alert_env.webhook_bodies() if b["kind"] == "copy_failed"]
    assert body["backup_id"] == record.id and "no-such-bucket-h8" in body["text"]

    # Retention expires the copies with the primary.
    assert run_backup("shop")[0].success
    backup_env.history().set_retention(record.id, datetime(2020, 1, 1, tzinfo=UTC))
    assert run_retention(dry_run=False).success
    assert backup_env.history().get(record.id).status == "expired"
    gone = [k for k in _files(primary_root) if record.id[:8] in k]
    assert gone == [] and not [k for k in _files(nas) if record.id[:8] in k]
    assert not [k for k in offsite.list_keys() if record.id[:8] in k] and len(_files(nas)) == 3


def test_drills_fall_back_to_a_copy_when_the_primary_is_corrupt_or_gone(source_dsn, tmp_path):
    names = BackupNames.for_backup("shop", datetime.now(UTC), "zstd")
    dump = dump_database(source_dsn, tmp_path / "stage", names)
    manifest = build_manifest(backup_id="b1", target="shop", backup_type="manual", names=names, dump=dump,
                              dagster_run_id=None, copies=[f"file://{tmp_path / 'nas'}"])
    primary, copy = open_storage(f"file://{tmp_path / 'main'}"), open_storage(f"file://{tmp_path / 'nas'}")
    publish(primary, names, dump, manifest)
    publish(copy, names, dump, manifest)

    archive = tmp_path / "main" / names.archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = drill_backup(FallbackStorage(primary, [copy]), names.manifest, stage_dir=tmp_path / "drill")
    assert result.passed, result.reason
    assert f"from copy file://{tmp_path / 'nas'}" in result.reason and "corrupt" in result.reason

    shutil.rmtree(tmp_path / "main")  # the primary is gone altogether
    result = drill_backup(FallbackStorage(primary, [copy]), names.manifest, stage_dir=tmp_path / "drill")
    assert result.passed, result.reason
    assert f"from copy file://{tmp_path / 'nas'}" in result.reason


def test_a_restore_falls_back_to_a_copy_and_says_so(source_dsn, restore_server, tmp_path):
    names = BackupNames.for_backup("shop", datetime.now(UTC), "zstd")
    dump = dump_database(source_dsn, tmp_path / "stage", names)
    manifest = build_manifest(backup_id="b2", target="shop", backup_type="manual", names=names, dump=dump,
                              dagster_run_id=None, copies=[f"file://{tmp_path / 'nas'}"])
    primary, copy = open_storage(f"file://{tmp_path / 'main'}"), open_storage(f"file://{tmp_path / 'nas'}")
    publish(copy, names, dump, manifest)  # the primary never got it (or lost it)
    to_dsn = restore_server.create_database("from_copy")
    restored = restore_from_storage(FallbackStorage(primary, [copy]), names.manifest, to_dsn, stage_dir=tmp_path / "r")
    assert restored.row_counts == manifest["row_counts"]
    assert any(f"from copy file://{tmp_path / 'nas'}" in w for w in restored.result.warnings)
