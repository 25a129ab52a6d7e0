"""Parallel dumps (`dump_jobs: N`): pg_dump's directory format in the exported snapshot, stored as one tar.

Real PostgreSQL 18 (embedded), local storage and moto's S3 server: a many-table
database backed up with 2 workers drills with exact row counts and restores
atomically into a fresh database; encrypted to S3 too; a killed pg_dump leaves
nothing; a damaged or hostile tar is a verdict on the backup, not a crash.
"""

import io
import json
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pyrage
import pytest

from backup_pipeline.core.archive import BackupNames, manifest_bytes
from backup_pipeline.core.backup import build_manifest, publish, split_backup_uri, take_backup
from backup_pipeline.core.config import Target, load_settings
from backup_pipeline.core.drill import drill_backup
from backup_pipeline.core.dump import dump_database
from backup_pipeline.core.dump_parallel import Untar
from backup_pipeline.core.errors import ConfigError, DumpError, VerifyError
from backup_pipeline.core.history import HistoryStore
from backup_pipeline.core.restore import create_database, restore_from_storage
from backup_pipeline.core.storage import S3Settings, S3Storage, open_storage
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from backup_pipeline_tests.pgcheck import fingerprint

TABLES = 10


@pytest.fixture
def many_tables_dsn(source_dsn) -> str:
    """The sample shop plus TABLES generated tables of a few thousand rows each."""
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bulk")
        for n in range(TABLES):
            conn.execute(f"CREATE TABLE bulk.t{n} (id int PRIMARY KEY, payload text, doc jsonb)")
            conn.execute(f"INSERT INTO bulk.t{n} SELECT g, md5((g * {n + 1})::text), jsonb_build_object('g', g) "
                         f"FROM generate_series(1, {2000 + 500 * n}) g")
    return source_dsn


def _backup(dsn: str, stage: Path, storage, recipients=()) -> tuple[BackupNames, dict]:
    names = BackupNames.for_backup("shop", datetime.now(UTC), "zstd", "0123abcd")
    result = dump_database(dsn, stage, names, jobs=2, storage=storage, recipients=recipients)
    manifest = build_manifest(backup_id="0123abcd-parallel", target="shop", backup_type="manual", names=names,
                              dump=result, dagster_run_id=None)
    publish(storage, names, result, manifest)
    return names, manifest


def test_parallel_backup_drills_with_exact_counts_and_restores_into_a_fresh_database(
        many_tables_dsn, restore_server, tmp_path, drill_tmp):
    storage = open_storage(f"file://{tmp_path / 'store'}")
    target = Target(name="shop", dsn_env="UNUSED", storage_url=storage.url, dump_jobs=2)
    history = HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite'}")
    record = take_backup(target, many_tables_dsn, storage, history, backup_type="manual", stage_dir=tmp_path / "stage")
    assert not (tmp_path / "stage").exists()
    key = split_backup_uri(record.manifest_uri)[1]
    manifest = json.loads(storage.get_bytes(key))
    assert manifest["format"] == "directory" and manifest["archive"]["key"].endswith(".dir.tar")
    assert record.archive_uri.endswith(".dir.tar") and manifest["compression"]["codec"] in ("zstd", "lz4", "gzip")
    assert len([t for t in manifest["row_counts"] if t.startswith("bulk.")]) == TABLES
    gzip_only = manifest["compression"]["codec"] == "gzip"  # the embedded pg_dump links neither zstd nor lz4
    assert any("cannot compress with zstd" in w for w in manifest["warnings"]) == gzip_only
    with tarfile.open(Path(storage.root) / manifest["archive"]["key"]) as tar:  # a plain tar any tool can read
        assert tar.getnames()[0] == "toc.dat" and all("/" not in n for n in tar.getnames())

    drill = drill_backup(storage, key, stage_dir=tmp_path / "drill")
    assert drill.passed, drill.reason
    assert drill.comparison.row_counts_match and drill.restorable
    assert not (tmp_path / "drill").exists()

    to_dsn = create_database(restore_server.dsn(), "fresh")
    restored = restore_from_storage(storage, key, to_dsn, stage_dir=tmp_path / "restore-stage")
    assert restored.row_counts == manifest["row_counts"]
    assert fingerprint(to_dsn) == fingerprint(many_tables_dsn)
    assert not any((tmp_path / "restore-stage").iterdir())


def test_encrypted_parallel_backup_to_s3_drills(many_tables_dsn, s3_server, s3_bucket, tmp_path, drill_tmp,
                                                monkeypatch):
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    monkeypatch.setenv("BACKUP_AGE_IDENTITY_FILE", str(tmp_path / "key.txt"))
    storage = S3Storage(f"s3://{s3_bucket}/b", S3Settings(endpoint_url=s3_server, access_key_id=ACCESS_KEY_ID,
                                                          secret_access_key=SECRET_ACCESS_KEY, region="us-east-1"))
    names, manifest = _backup(many_tables_dsn, tmp_path / "stage", storage, [str(identity.to_public())])
    with storage.open_read(manifest["archive"]["key"]) as stream:
        assert stream.read(22) == b"age-encryption.org/v1\n"
    assert [p.name for p in (tmp_path / "stage").iterdir()] == [Path(names.globals).name]  # no directory left
    drill = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert drill.passed, drill.reason


def _pg_dumps() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "pg_dump"]


def test_a_killed_parallel_pg_dump_leaves_no_manifest_and_an_empty_stage(many_tables_dsn, tmp_path):
    storage = open_storage(f"file://{tmp_path / 'store'}")
    target = Target(name="shop", dsn_env="UNUSED", storage_url=storage.url, dump_jobs=2)
    history = HistoryStore(f"sqlite:///{tmp_path / 'history.sqlite'}")
    stage, outcome = tmp_path / "stage", {}

    def run() -> None:
        try:
            take_backup(target, many_tables_dsn, storage, history, backup_type="manual", stage_dir=stage)
        except Exception as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    with psycopg.connect(many_tables_dsn) as locker:
        locker.execute("LOCK TABLE bulk.t3 IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it, mid-dump
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 20
        while not (procs := _pg_dumps()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs, "pg_dump never started"
        time.sleep(0.3)
        for proc in _pg_dumps():
            proc.kill()
        thread.join(30)
        locker.rollback()
    error = outcome.get("error")
    assert isinstance(error, DumpError) and "killed by SIGKILL" in str(error), outcome
    assert not stage.exists() or not any(stage.iterdir())
    assert not list(Path(storage.root).rglob("*.manifest.json")) and not list(Path(storage.root).rglob("*.tar"))
    assert not _pg_dumps()
    [row] = history.list(target="shop")
    assert row.status == "failed"


def _republished(storage, names: BackupNames, manifest: dict, data: bytes) -> None:
    """Replace the stored tar with data AND fix the manifest to match, so only the tar itself can tell."""
    import hashlib

    key = manifest["archive"]["key"]
    (Path(storage.root) / key).write_bytes(data)
    manifest["archive"].update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (Path(storage.root) / names.manifest).write_bytes(manifest_bytes(manifest))


def test_a_truncated_or_corrupt_tar_fails_the_drill_as_a_verdict(many_tables_dsn, tmp_path, drill_tmp):
    storage = open_storage(f"file://{tmp_path / 'store'}")
    names, manifest = _backup(many_tables_dsn, tmp_path / "stage", storage)
    stored = Path(storage.root) / manifest["archive"]["key"]
    whole = stored.read_bytes()

    stored.write_bytes(whole[: len(whole) // 2])  # cut in transit: the checksum says so
    drill = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not drill.passed and "does not match its manifest" in drill.reason

    _republished(storage, names, manifest, whole[: len(whole) // 2])  # cut before it was hashed
    drill = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not drill.passed and "truncated" in drill.reason, drill.reason

    damaged = bytearray(whole)
    damaged[100] ^= 0xFF  # inside the first member's header
    _republished(storage, names, manifest, bytes(damaged))
    drill = drill_backup(storage, names.manifest, stage_dir=tmp_path / "drill")
    assert not drill.passed and "corrupt" in drill.reason, drill.reason
    assert not (tmp_path / "drill").exists() and not list(drill_tmp.iterdir())


def _tar(*members: tuple[str, bytes], kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            if kind == tarfile.SYMTYPE:
                info.size, info.linkname = 0, "/etc/passwd"
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@pytest.mark.parametrize("archive, refused", [
    (_tar(("toc.dat", b"x"), ("../evil", b"owned")), "'../evil'"),
    (_tar(("toc.dat", b"x"), ("/tmp/evil", b"owned")), "'/tmp/evil'"),
    (_tar(("toc.dat", b"x"), ("sub/toc.dat", b"x")), "'sub/toc.dat'"),
    (_tar(("toc.dat", b"")), None),
    (_tar(("toc.dat", b""), kind=tarfile.SYMTYPE), "a link"),
])
def test_untar_refuses_paths_and_links(archive, refused, tmp_path):
    dest = tmp_path / "out"
    untar = Untar(dest)
    if refused is None:
        untar.write(archive)
        untar.close()
        assert [p.name for p in dest.iterdir()] == ["toc.dat"]
        return
    with pytest.raises(VerifyError, match="refused|link") as caught:
        for i in range(0, len(archive), 100):  # in pieces, as a download arrives
            untar.write(archive[i:i + 100])
        untar.close()
    untar.abort()
    assert refused in str(caught.value)
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    assert [p.name for p in dest.iterdir()] in ([], ["toc.dat"])


@pytest.mark.parametrize("value, ok", [(4, True), (0, False), (33, False)])
def test_dump_jobs_setting_is_checked(value, ok, tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(f"storage: file:///tmp/x\ntargets:\n  shop:\n    dsn_env: DB\n    dump_jobs: {value}\n")
    if ok:
        assert load_settings(env={}, targets_file=str(path)).target("shop").dump_jobs == value
        return
    with pytest.raises(ConfigError, match=r"targets\.shop\.dump_jobs: dump_jobs .* out of range: use 1 .* to 32"):
        load_settings(env={}, targets_file=str(path))
