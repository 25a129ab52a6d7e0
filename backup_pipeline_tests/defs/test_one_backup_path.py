"""take_backup (the safety backup before a restore) and the backup job run one sequence (core.backup
start_backup -> dump_stage -> finish_backup): what one records, the other records the same way."""

import json

import pytest

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import dump_stage, finish_backup, split_backup_uri, start_backup, take_backup
from backup_pipeline.core.config import Target
from backup_pipeline.core.errors import StorageError, VerifyError
from backup_pipeline.core.storage import open_storage
from backup_pipeline_tests.defs.test_backup_job import run_backup
from backup_pipeline_tests.fix_dagster import SOURCE_DSN_ENV

# What history.start and history.complete record, that two backups of one database share.
SHARED = ("status", "target", "compression", "row_counts", "server_version", "pg_dump_version", "error", "source")
SET = ("archive_uri", "globals_uri", "manifest_uri", "sha256", "size_bytes", "duration_seconds", "finished_at")


def _stored(record) -> tuple[dict, list[str]]:
    """The backup's manifest and its objects' names after the part the id and start time decide."""
    base, key = split_backup_uri(record.manifest_uri)
    storage = open_storage(base)
    stem = BackupNames.for_backup(record.target, record.timestamp, "none", record.id).base
    names = sorted(k.rsplit("/", 1)[1].removeprefix(stem) for k in storage.list_keys(f"{record.target}/") if stem in k)
    return json.loads(storage.get_bytes(key)), names


def test_take_backup_records_and_stores_what_the_backup_job_does(backup_env, dagster_instance, source_dsn,
                                                                  monkeypatch, tmp_path):
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    result = run_backup(dagster_instance, storage_url=backup_env.local_storage_url)
    assert result.success
    history = backup_env.history()
    by_job = history.find_by_run(result.run_id, "shop")

    target = Target(name="shop", dsn_env=SOURCE_DSN_ENV, storage_url=backup_env.local_storage_url)
    stage = tmp_path / "safety-stage"
    by_call = take_backup(target, source_dsn, open_storage(backup_env.local_storage_url), history,
                          backup_type="pre-restore", stage_dir=stage, dagster_run_id="run-of-a-restore")

    assert (by_call.status, by_call.type, by_call.verification_status) == ("completed", "pre-restore", "checksum_ok")
    assert by_call.dagster_run_id == "run-of-a-restore"
    assert {k: getattr(by_call, k) for k in SHARED} == {k: getattr(by_job, k) for k in SHARED}
    assert all(getattr(by_call, k) is not None for k in SET) and all(getattr(by_job, k) is not None for k in SET)
    assert by_call.retention_until - by_call.timestamp == by_job.retention_until - by_job.timestamp

    job_manifest, job_objects = _stored(by_job)
    call_manifest, call_objects = _stored(by_call)
    assert sorted(call_manifest) == sorted(job_manifest)
    for field in ("format_version", "target", "database", "server_version", "pg_dump_version", "format",
                  "compression", "row_counts", "inventory", "encryption", "copies", "created_by"):
        assert call_manifest[field] == job_manifest[field], field
    assert (call_manifest["backup_id"], call_manifest["type"]) == (by_call.id, "pre-restore")
    assert call_manifest["archive"]["sha256"] == by_call.sha256
    assert call_objects == job_objects and len(call_objects) == 3  # archive, roles file, manifest last
    assert not stage.exists(), "take_backup left its stage behind"


def test_take_backup_that_cannot_store_fails_its_row_and_leaves_no_manifest(backup_env, source_dsn, s3_server,
                                                                            s3_settings, tmp_path):
    url = "s3://no-such-bucket-for-take-backup/prefix"
    target = Target(name="dev", dsn_env="", storage_url=url)
    history = backup_env.history()
    stage = tmp_path / "safety-stage"
    with pytest.raises(StorageError):
        take_backup(target, source_dsn, open_storage(url, s3_settings), history, backup_type="pre-restore",
                    stage_dir=stage)
    [row] = history.list("dev")
    assert row.status == "failed" and "no-such-bucket-for-take-backup" in (row.error or "")
    assert row.manifest_uri is None
    assert not stage.exists()


def test_a_stored_archive_that_does_not_match_takes_its_manifest_back(backup_env, source_dsn, tmp_path):
    """The checked finish (take_backup's) reads the archive back; bytes damaged in storage leave no manifest."""
    storage = open_storage(backup_env.local_storage_url)
    target = Target(name="shop", dsn_env="", storage_url=backup_env.local_storage_url)
    history = backup_env.history()
    record = start_backup(history, target, backup_type="pre-restore")
    staged = dump_stage(target, source_dsn, storage, record, backup_type="pre-restore", stage_dir=tmp_path / "stage")
    data = bytearray(storage.get_bytes(staged.names.archive))
    data[len(data) // 2] ^= 0xFF  # the stored archive is damaged between the upload and the read-back
    storage.put_bytes(bytes(data), staged.names.archive)
    with pytest.raises(VerifyError):
        finish_backup(storage, history, staged, dagster_run_id=None, check=True)
    assert not storage.exists(staged.names.manifest)
    assert history.get(record.id).status == "running"  # the caller fails it (take_backup does)
