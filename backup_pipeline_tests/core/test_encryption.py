"""Encryption at rest with age: the stock `age` tool opens what we store; drills and restores need the right key."""

import gzip
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyrage
import pytest
import zstandard

from backup_pipeline.core.archive import BackupNames
from backup_pipeline.core.backup import build_manifest, publish, verify_checksum
from backup_pipeline.core.config import load_settings
from backup_pipeline.core.drill import drill_backup
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.encryption import IDENTITY_ENV, parse_recipients
from backup_pipeline.core.errors import ConfigError, DrillError, IdentityMissing
from backup_pipeline.core.pgtools import find_tools
from backup_pipeline.core.restore import restore_from_storage
from backup_pipeline.core.storage import open_storage
from backup_pipeline_tests.pgcheck import fingerprint

AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="the age CLI is not installed (apt-get install age)")


def _key(path: Path) -> str:
    """A fresh age identity file, as age-keygen writes it; returns its public key."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path.write_text(f"# created: now\n# public key: {public}\n{identity}\n")
    return public


def _publish(dsn: str, tmp_path: Path, recipients, codec: str = "zstd"):
    names = BackupNames.for_backup("shop", datetime.now(UTC), codec)
    result = dump_database(dsn, tmp_path / "stage", names, recipients=recipients)
    manifest = build_manifest(backup_id=f"id-{names.base}", target="shop", backup_type="manual", names=names,
                              dump=result, dagster_run_id=None)
    storage = open_storage(f"file://{tmp_path / 'store'}")
    publish(storage, names, result, manifest)
    return storage, names, manifest


@pytest.fixture
def keys(tmp_path):
    key, other = tmp_path / "key.txt", tmp_path / "other.txt"
    return key, _key(key), other, _key(other)


@needs_age
def test_the_age_tool_decrypts_the_stored_archive_and_roles_file(source_dsn, tmp_path, keys):
    key, public, _, _ = keys
    storage, names, manifest = _publish(source_dsn, tmp_path, [public])
    stored = Path(storage.root) / names.archive
    assert stored.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert not list((tmp_path / "stage").glob("*")) or all(
        p.read_bytes().startswith(b"age-encryption.org/v1") for p in (tmp_path / "stage").iterdir())
    assert manifest["encryption"]["recipients"] == [public] and "AGE-SECRET" not in json.dumps(manifest)
    verify_checksum(storage, manifest)  # sha256 of the stored bytes: no key needed

    pg_restore = find_tools(int(manifest["pg_dump_version"].split(".")[0])).path("pg_restore")
    if shutil.which("zstd"):  # exactly what the README tells an operator to type
        toc = subprocess.run(f"{AGE} -d -i {key} {stored} | zstd -d | {pg_restore} -l", shell=True,
                             capture_output=True, check=True).stdout.decode()
    else:
        decrypted = subprocess.run([AGE, "-d", "-i", str(key), str(stored)], capture_output=True, check=True).stdout
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(decrypted)
        toc = subprocess.run([pg_restore, "-l"], input=plain, capture_output=True, check=True).stdout.decode()
    assert "TABLE DATA sales orders" in toc
    roles = subprocess.run([AGE, "-d", "-i", str(key), str(Path(storage.root) / names.globals)],
                           capture_output=True, check=True).stdout.decode()
    assert "CREATE ROLE shop_app" in roles


def test_gzip_archives_are_encrypted_too(source_dsn, tmp_path, keys, monkeypatch):
    key, public, _, _ = keys
    storage, names, manifest = _publish(source_dsn, tmp_path, [public], codec="gzip")
    data = (Path(storage.root) / names.archive).read_bytes()
    plain = gzip.decompress(pyrage.decrypt(data, [pyrage.x25519.Identity.from_str(key.read_text().split()[-1])]))
    assert plain.startswith(b"PGDMP")
    assert manifest["archive"]["uncompressed_size_bytes"] == len(plain)


@pytest.mark.slow
def test_drill_and_restore_with_the_identity_are_exact(source_dsn, restore_server, tmp_path, keys, monkeypatch):
    key, public, other, other_public = keys
    storage, names, _ = _publish(source_dsn, tmp_path, [other_public, public])  # two recipients: key rotation
    monkeypatch.setenv(IDENTITY_ENV, str(key))
    result = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert result.passed, result.reason
    to_dsn = restore_server.create_database("restored")
    restored = restore_from_storage(storage, names.manifest, to_dsn, stage_dir=tmp_path / "r")
    assert not restored.mismatches
    assert fingerprint(to_dsn) == fingerprint(source_dsn)
    assert not (tmp_path / "drill").exists() and not list((tmp_path / "r").glob("*.decrypting"))


def test_missing_and_wrong_identities_are_refused_as_drills_that_could_not_run(source_dsn, tmp_path, keys, monkeypatch):
    key, public, other, _ = keys
    storage, names, manifest = _publish(source_dsn, tmp_path, [public])
    monkeypatch.delenv(IDENTITY_ENV, raising=False)
    with pytest.raises(IdentityMissing, match=f"{IDENTITY_ENV} is not set") as missing:
        drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert isinstance(missing.value, DrillError) and manifest["backup_id"] in str(missing.value)
    monkeypatch.setenv(IDENTITY_ENV, str(other))
    with pytest.raises(IdentityMissing, match="none of the 1 key") as wrong:
        restore_from_storage(storage, names.manifest, "postgresql://nobody@127.0.0.1:1/x", stage_dir=tmp_path / "r")
    assert manifest["backup_id"] in str(wrong.value) and "AGE-SECRET" not in str(wrong.value)
    monkeypatch.setenv(IDENTITY_ENV, str(tmp_path / "absent.txt"))
    with pytest.raises(IdentityMissing, match="cannot be read"):
        drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not (tmp_path / "drill").exists() and not list((tmp_path / "r").glob("*"))


def test_recipients_are_validated_and_secret_keys_refused(tmp_path, keys):
    key, public, _, other_public = keys
    assert parse_recipients(f"{public}, {other_public}\n{public}") == (public, other_public)
    with pytest.raises(ConfigError, match="holds a secret key") as exc:
        parse_recipients(key.read_text().split()[-1])
    assert "AGE-SECRET" not in str(exc.value).replace("AGE-SECRET-KEY-…", "")
    with pytest.raises(ConfigError, match="entry 1 is not an age public key"):
        parse_recipients("hunter2")
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"storage: file:///tmp/x\ntargets:\n  shop:\n    dsn_env: SHOP_URL\n    age_recipients: [{public}]\n")
    assert load_settings({}, str(targets)).target("shop").age_recipients == (public,)
    targets.write_text("storage: file:///tmp/x\ntargets:\n  shop:\n    dsn_env: SHOP_URL\n    age_recipients: nope\n")
    with pytest.raises(ConfigError, match=r"targets\.shop\.age_recipients: entry 1"):
        load_settings({}, str(targets))
