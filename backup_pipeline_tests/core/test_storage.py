"""Storage behaviour against a local folder and a real S3 protocol endpoint (moto server).

Shared behaviour is tested once, parametrised over both backends; S3-only
failure modes (missing bucket, unreachable endpoint, rejected keys) use real
HTTP errors from the moto server, never a patched boto3.
"""

import dataclasses
import errno
import hashlib
import os
import pickle
import socket
from pathlib import Path

import pytest

from backup_pipeline.core.errors import ConfigError, StorageError
from backup_pipeline.core.storage import (
    LocalStorage,
    S3Settings,
    S3Storage,
    Storage,
    choose_part_size,
    open_storage,
)
from backup_pipeline_tests.fix_s3 import SECRET_ACCESS_KEY

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return open_storage((tmp_path / "store").as_uri())
    settings = dataclasses.replace(request.getfixturevalue("s3_settings"), part_size=5 * MiB)
    return open_storage(request.getfixturevalue("s3_storage_url"), settings)


def sha256_stream(storage: Storage, key: str) -> str:
    digest = hashlib.sha256()
    with storage.open_read(key) as f:
        while chunk := f.read(256 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def multipart_etag(data: bytes, part_size: int) -> str:
    """The ETag S3 gives an object uploaded in parts of exactly part_size bytes."""
    md5s = b"".join(hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size))
    return f'"{hashlib.md5(md5s).hexdigest()}-{-(-len(data) // part_size)}"'


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pure helpers ---------------------------------------------------------------------------


def test_choose_part_size() -> None:
    assert choose_part_size(0) == 16 * MiB
    assert choose_part_size(12 * MiB, 5 * MiB) == 5 * MiB
    assert choose_part_size(12 * MiB, 1 * MiB) == 5 * MiB  # S3 minimum
    assert choose_part_size(200 * 1024 * MiB, 16 * MiB) == 23 * MiB  # 200 GiB / 9000 parts, rounded up to MiB
    for size in (1, 10 * MiB, 150 * 1024 * MiB, 3 * 1024 * 1024 * MiB):
        part = choose_part_size(size)
        assert part % MiB == 0 and part >= 5 * MiB
        assert -(-size // part) <= 9000


def test_open_storage_rejects_unknown_urls() -> None:
    with pytest.raises(ConfigError) as info:
        open_storage("ftp://host/backups")
    assert "ftp://host/backups" in str(info.value) and "s3://bucket" in str(info.value)
    with pytest.raises(ConfigError):
        open_storage("/plain/path")
    with pytest.raises(ConfigError, match="three slashes"):
        open_storage("file://relative/dir")


def test_open_storage_parses_urls(tmp_path: Path) -> None:
    local = open_storage(tmp_path.as_uri())
    assert isinstance(local, LocalStorage)
    assert local.uri("a/b.dump") == (tmp_path / "a" / "b.dump").as_uri()
    s3 = open_storage("s3://my-bucket/backups/prod/", S3Settings())
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix) == ("my-bucket", "backups/prod")
    assert s3.uri("db/x.dump") == "s3://my-bucket/backups/prod/db/x.dump"
    assert open_storage("s3://my-bucket", S3Settings()).uri("x") == "s3://my-bucket/x"
    assert pickle.loads(pickle.dumps(s3)).uri("k") == s3.uri("k")
    assert pickle.loads(pickle.dumps(local)).uri("k") == local.uri("k")


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../b", "a//b", "dir/", ".x.partial-123"])
def test_bad_keys_are_rejected(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        open_storage(tmp_path.as_uri()).uri(key)
    with pytest.raises(ValueError):
        open_storage("s3://b/p", S3Settings()).uri(key)


def test_settings_from_env_prefers_r2() -> None:
    env = {
        "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
        "R2_ACCESS_KEY_ID": "r2id",
        "R2_SECRET_ACCESS_KEY": "r2secret",
        "AWS_ACCESS_KEY_ID": "awsid",
        "AWS_SECRET_ACCESS_KEY": "awssecret",
    }
    settings = S3Settings.from_env(env)
    assert (settings.access_key_id, settings.secret_access_key) == ("r2id", "r2secret")
    assert settings.effective_region == "auto"
    assert "r2secret" not in repr(settings)


def test_settings_from_env_falls_back_to_aws() -> None:
    settings = S3Settings.from_env(
        {"AWS_ACCESS_KEY_ID": "awsid", "AWS_SECRET_ACCESS_KEY": "awssecret", "AWS_DEFAULT_REGION": "eu-west-1"}
    )
    assert (settings.endpoint_url, settings.access_key_id, settings.region) == (None, "awsid", "eu-west-1")
    empty = S3Settings.from_env({})
    assert (empty.access_key_id, empty.secret_access_key, empty.effective_region) == (None, None, "us-east-1")


def test_client_config_is_r2_safe() -> None:
    settings = S3Settings(endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s")
    storage = S3Storage("s3://b/p", settings)
    config = storage.client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] == 6  # what botocore makes of max_attempts=5 (retries)
    assert (config.connect_timeout, config.read_timeout) == (10, 60)
    assert config.s3["addressing_style"] == "path"
    aws = S3Storage("s3://b", S3Settings(access_key_id="k", secret_access_key="s"))
    assert aws.client.meta.config.s3["addressing_style"] == "virtual"
    assert aws.client.meta.region_name == "us-east-1"


# --- shared behaviour, local and S3 -----------------------------------------------------------


def test_multipart_round_trip(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)
    source = tmp_path / "source.dump"
    source.write_bytes(data)
    uri = storage.put_file(source, "db/2024/backup.dump")
    assert uri == storage.uri("db/2024/backup.dump")
    assert storage.size("db/2024/backup.dump") == len(data)
    assert sha256_stream(storage, "db/2024/backup.dump") == hashlib.sha256(data).hexdigest()
    target = tmp_path / "restore" / "copy.dump"
    storage.download_file("db/2024/backup.dump", target)
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["copy.dump"]
    if isinstance(storage, S3Storage):
        head = storage.client.head_object(Bucket=storage.bucket, Key="some/prefix/db/2024/backup.dump")
        assert head["ETag"] == multipart_etag(data, 5 * MiB)  # three parts: 5, 5 and 2 MiB


def test_small_objects(storage: Storage) -> None:
    assert not storage.exists("manifest.json")
    uri = storage.put_bytes(b'{"ok": true}', "manifest.json")
    assert uri == storage.uri("manifest.json")
    assert storage.exists("manifest.json")
    assert storage.get_bytes("manifest.json") == b'{"ok": true}'
    assert storage.size("manifest.json") == 12
    storage.put_bytes(b"{}", "manifest.json")
    assert storage.get_bytes("manifest.json") == b"{}"


def test_list_keys_and_delete(storage: Storage) -> None:
    for key in ["a/1", "a/2", "ab/3", "b/4", "top"]:
        storage.put_bytes(key.encode(), key)
    assert list(storage.list_keys()) == ["a/1", "a/2", "ab/3", "b/4", "top"]
    assert list(storage.list_keys("a/")) == ["a/1", "a/2"]
    assert list(storage.list_keys("a")) == ["a/1", "a/2", "ab/3"]
    assert list(storage.list_keys("zzz/")) == []
    storage.delete("a/1")
    storage.delete("a/1")
    storage.delete("never/existed")
    assert not storage.exists("a/1")
    assert list(storage.list_keys("a/")) == ["a/2"]


def test_missing_objects(storage: Storage, tmp_path: Path) -> None:
    uri = storage.uri("nope.dump")
    for call in (
        lambda: storage.open_read("nope.dump"),
        lambda: storage.get_bytes("nope.dump"),
        lambda: storage.size("nope.dump"),
        lambda: storage.download_file("nope.dump", tmp_path / "out" / "nope.dump"),
    ):
        with pytest.raises(StorageError, match="does not exist") as info:
            call()
        assert uri in str(info.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_missing_upload_source_names_the_file(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist") as info:
        storage.put_file(tmp_path / "missing.dump", "x.dump")
    assert str(tmp_path / "missing.dump") in str(info.value)
    assert not storage.exists("x.dump")


def test_check_passes(storage: Storage) -> None:
    storage.check()


# --- local only ---------------------------------------------------------------------------------


def test_local_failed_write_leaves_old_object_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStorage((tmp_path / "store").as_uri())
    store.put_bytes(b"old", "db/x.dump")
    source = tmp_path / "new.dump"
    source.write_bytes(b"new" * 1000)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError, match="disk full while writing") as info:
        store.put_file(source, "db/x.dump")
    with pytest.raises(StorageError, match="disk full"):
        store.put_bytes(b"fresh", "db/y.dump")
    monkeypatch.undo()
    assert str(tmp_path / "store" / "db" / "x.dump") in str(info.value)
    assert not info.value.transient
    assert sorted(p.name for p in (tmp_path / "store" / "db").iterdir()) == ["x.dump"]
    assert store.get_bytes("db/x.dump") == b"old"


def test_local_list_hides_partial_files(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path.as_uri())
    store.put_bytes(b"1", "d/real")
    (tmp_path / "d" / ".real.partial-abc123").write_bytes(b"half")
    assert list(store.list_keys()) == ["d/real"]


def test_local_check(tmp_path: Path) -> None:
    LocalStorage((tmp_path / "new" / "dir").as_uri()).check()
    assert (tmp_path / "new" / "dir").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError) as info:
        LocalStorage((tmp_path / "file" / "sub").as_uri()).check()
    assert str(tmp_path / "file" / "sub") in str(info.value)


# --- S3 only --------------------------------------------------------------------------------------


def test_s3_missing_bucket_names_it(s3_settings: S3Settings) -> None:
    storage = S3Storage("s3://no-such-bucket-here/p", s3_settings)
    with pytest.raises(StorageError) as info:
        storage.check()
    message = str(info.value)
    assert "bucket 'no-such-bucket-here' does not exist" in message
    assert s3_settings.endpoint_url in message and "R2_BUCKET" in message
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        storage.put_bytes(b"x", "k")


def test_s3_unreachable_endpoint(s3_settings: S3Settings, s3_bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    settings = dataclasses.replace(s3_settings, endpoint_url=endpoint, max_attempts=0)
    storage = S3Storage(f"s3://{s3_bucket}", settings)
    for call in (storage.check, lambda: storage.put_bytes(b"x", "k"), lambda: list(storage.list_keys())):
        with pytest.raises(StorageError, match="cannot reach endpoint") as info:
            call()
        assert endpoint in str(info.value)
        assert info.value.transient
        assert SECRET_ACCESS_KEY not in str(info.value)


def test_s3_rejected_credentials(
    s3_settings: S3Settings, s3_bucket: str, s3_auth_enforced: None, tmp_path: Path
) -> None:
    storage = S3Storage(f"s3://{s3_bucket}/p", s3_settings)
    source = tmp_path / "f"
    source.write_bytes(b"data")
    for call in (storage.check, lambda: storage.put_bytes(b"x", "k"), lambda: storage.put_file(source, "k")):
        with pytest.raises(StorageError, match="credentials were rejected") as info:
            call()
        message = str(info.value)
        assert s3_settings.endpoint_url in message and "R2_ACCESS_KEY_ID" in message
        assert SECRET_ACCESS_KEY not in message
        assert not info.value.transient


def test_s3_incomplete_uploads(s3_settings: S3Settings, s3_storage_url: str) -> None:
    storage = S3Storage(s3_storage_url, s3_settings)
    storage.client.create_multipart_upload(Bucket=storage.bucket, Key="some/prefix/half.dump")
    [upload] = storage.list_incomplete_uploads()
    assert upload.key == "half.dump"
    assert list(storage.list_keys()) == []
    storage.abort_incomplete_upload(upload)
    assert storage.list_incomplete_uploads() == []
