"""Drills that could not run versus drills that failed, with real faults: tiny disks, a cut network, no server."""

import tempfile
from pathlib import Path

import pytest

from backup_pipeline.core.drill import drill_backup
from backup_pipeline.core.errors import DrillError
from backup_pipeline.core.storage import S3Settings, open_storage
from backup_pipeline_tests.core.test_drill import _drill_servers, _publish
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if not p.is_dir()]


def test_a_stage_too_small_for_the_dump_streams_it_into_a_serial_restore(source_dsn, tmp_path, tmpfs, drill_tmp):
    storage, names, manifest = _publish(source_dsn, tmp_path)
    stage = tmpfs("stage", "size=1m")
    needed = manifest["archive"]["size_bytes"] + manifest["archive"]["uncompressed_size_bytes"]
    assert needed > 1024 * 1024, "the test database must not fit in the 1 MiB stage"
    result = drill_backup(storage, names.manifest, stage_dir=stage / "run-1")
    assert result.passed, result.reason
    assert result.streamed and "streamed into a serial pg_restore" in result.reason
    assert result.comparison.row_counts_match and result.to_detail()["streamed"] is True
    assert list(stage.iterdir()) == [] and not list(drill_tmp.iterdir())


def test_a_damaged_archive_streamed_on_a_small_stage_fails_the_drill(source_dsn, tmp_path, tmpfs):
    storage, names, manifest = _publish(source_dsn, tmp_path)
    key = manifest["archive"]["key"]
    data = bytearray(storage.get_bytes(key))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the stored archive
    storage.put_bytes(bytes(data), key)
    stage = tmpfs("stage", "size=1m")
    result = drill_backup(storage, names.manifest, stage_dir=stage / "run-1")
    assert result.streamed and not result.passed
    assert "sha256" in result.reason or "corrupt" in result.reason, result.reason
    assert list(stage.iterdir()) == []


def test_a_disk_that_fills_during_the_download_is_a_drill_error_and_leaves_nothing(source_dsn, tmp_path, tmpfs):
    storage, names, _ = _publish(source_dsn, tmp_path)
    # Bytes enough, but inodes for the stage folders only: the first file the drill writes hits ENOSPC.
    stage = tmpfs("stage", "size=64m,nr_inodes=4")
    (stage / "run-1").mkdir()
    with pytest.raises(DrillError, match=r"no space for the drill in stage .*run-1 \(ENOSPC\).*BACKUP_STAGE_DIR"):
        drill_backup(storage, names.manifest, stage_dir=stage / "run-1")
    assert _files(stage) == [] and list((stage / "run-1").iterdir()) == []


def test_a_cut_network_is_a_drill_error(source_dsn, tmp_path, s3_server, s3_bucket, proxy_to):
    local, names, manifest = _publish(source_dsn, tmp_path)
    proxy = proxy_to(s3_server)
    settings = S3Settings(endpoint_url=proxy.url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY,
                          region="us-east-1")
    storage = open_storage(f"s3://{s3_bucket}/b", settings)
    for key in (manifest["archive"]["key"], manifest["globals"]["key"], names.manifest):
        storage.put_bytes(local.get_bytes(key), key)
    proxy.cut_when(rb"(GET|HEAD) \S*\.dump\.zst")
    with pytest.raises(DrillError, match=f"could not download backup {manifest['backup_id']}: cannot reach endpoint"):
        drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert proxy.cuts == 1 and not (tmp_path / "drill").exists()
    proxy.restore()
    assert drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill").passed


def test_a_missing_archive_is_a_failed_verdict_not_a_drill_error(source_dsn, tmp_path):
    storage, names, manifest = _publish(source_dsn, tmp_path)
    storage.delete(manifest["archive"]["key"])
    result = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not result.passed and "is missing from storage although its manifest is there" in result.reason
    assert storage.uri(manifest["archive"]["key"]) in result.reason


def test_a_drill_server_that_will_not_start_is_a_drill_error(source_dsn, tmp_path, tmpfs, monkeypatch):
    storage, names, _ = _publish(source_dsn, tmp_path)
    tiny = tmpfs("tmp", "size=256k,mode=1777")
    monkeypatch.setattr(tempfile, "tempdir", str(tiny))  # TMPDIR on a tiny disk
    with pytest.raises(DrillError, match="the throwaway PostgreSQL for the drill would not start: initdb"):
        drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not _drill_servers(tiny) and _files(tiny) == [] and not (tmp_path / "drill").exists()
