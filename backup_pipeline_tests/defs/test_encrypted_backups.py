"""The backup job with age encryption: drilled where the identity is, checksum-verified where it is not."""

import json
from pathlib import Path

import pyrage

from backup_pipeline.core.backup import split_backup_uri
from backup_pipeline.core.encryption import IDENTITY_ENV, NO_IDENTITY_REASON, RECIPIENTS_ENV
from backup_pipeline_tests.defs.test_backup_job import all_event_text, run_backup
from backup_pipeline_tests.fix_dagster import SOURCE_DSN_ENV


def test_backup_host_without_identity_verifies_checksums_and_says_so(
    backup_env, dagster_instance, source_dsn, monkeypatch, tmp_path
):
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    monkeypatch.setenv(SOURCE_DSN_ENV, source_dsn)
    monkeypatch.setenv(RECIPIENTS_ENV, str(identity.to_public()))
    monkeypatch.delenv(IDENTITY_ENV, raising=False)

    result = run_backup(dagster_instance, storage_url=backup_env.local_storage_url)
    assert result.success
    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert record.verification_status == "checksum_ok"
    assert record.verification_detail.startswith(NO_IDENTITY_REASON)
    base, _ = split_backup_uri(record.manifest_uri)
    stored = Path(base.removeprefix("file://"))
    manifest = json.loads(next(stored.rglob("*.manifest.json")).read_text())
    assert manifest["encryption"]["recipients"] == [str(identity.to_public())]
    assert all(p.read_bytes().startswith(b"age-encryption.org/v1") for p in stored.rglob("*") if p.is_file()
               and not p.name.endswith(".manifest.json"))
    everything = all_event_text(dagster_instance, result.run_id) + json.dumps(manifest) + repr(record)
    assert "AGE-SECRET-KEY" not in everything

    monkeypatch.setenv(IDENTITY_ENV, str(key))  # the drill host
    result = run_backup(dagster_instance, storage_url=backup_env.local_storage_url)
    assert result.success
    assert backup_env.history().find_by_run(result.run_id, "shop").verification_status == "verified"
