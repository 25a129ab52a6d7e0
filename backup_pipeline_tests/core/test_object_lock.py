"""S3 Object Lock against moto's S3 server: locked uploads, extensions, and deletes that are refused."""

import dataclasses
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from backup_pipeline.core.errors import StorageError
from backup_pipeline.core.storage import S3Storage
from backup_pipeline.core.storage.s3 import MIN_PART_SIZE
from backup_pipeline.core.storage.base import ObjectLock, supports_lock
from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY


def _versions(s3_server: str, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=ACCESS_KEY_ID,
                          aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")
    listing = client.list_object_versions(Bucket=bucket)
    return [v["Key"] for v in listing.get("Versions", [])] + [f"marker:{m['Key']}" for m in listing.get("DeleteMarkers", [])]


def test_a_locked_object_survives_a_delete_attempt(s3_server, s3_settings, s3_lock_bucket, tmp_path):
    storage = S3Storage(f"s3://{s3_lock_bucket}/backups", dataclasses.replace(s3_settings, part_size=MIN_PART_SIZE))
    assert supports_lock(storage)
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    big = tmp_path / "archive"
    big.write_bytes(b"x" * (MIN_PART_SIZE + 1))  # a multipart upload: two parts
    storage.put_file(big, "shop/a.dump.zst", lock=ObjectLock("GOVERNANCE", until))
    storage.put_bytes(b"{}", "shop/a.manifest.json", lock=ObjectLock("GOVERNANCE", until))
    for key in ("shop/a.dump.zst", "shop/a.manifest.json"):
        lock = storage.object_lock(key)
        assert lock.mode == "GOVERNANCE" and lock.until == until

    with pytest.raises(StorageError, match=r"is locked \(GOVERNANCE\) until .*cannot be deleted before then"):
        storage.delete("shop/a.dump.zst")
    assert storage.exists("shop/a.dump.zst") and storage.get_bytes("shop/a.manifest.json") == b"{}"
    assert "marker:backups/shop/a.dump.zst" not in _versions(s3_server, s3_lock_bucket), "a delete marker hid it"

    later = until + timedelta(days=10)
    assert storage.extend_lock("shop/a.dump.zst", ObjectLock("GOVERNANCE", later)).until == later
    assert storage.extend_lock("shop/a.dump.zst", ObjectLock("GOVERNANCE", until)).until == later  # never shortened
    assert storage.extend_lock("shop/a.dump.zst", ObjectLock("COMPLIANCE", later)).mode == "COMPLIANCE"
    assert storage.extend_lock("shop/a.dump.zst", ObjectLock("GOVERNANCE", later)).mode == "COMPLIANCE"  # never weakened


def test_unlocked_objects_in_a_lock_bucket_are_deleted_with_all_their_versions(s3_server, s3_settings, s3_lock_bucket):
    storage = S3Storage(f"s3://{s3_lock_bucket}", s3_settings)
    storage.put_bytes(b"one", "shop/old.roles.sql")
    storage.put_bytes(b"two", "shop/old.roles.sql")
    storage.delete("shop/old.roles.sql")
    assert not storage.exists("shop/old.roles.sql") and _versions(s3_server, s3_lock_bucket) == []


def test_buckets_without_object_lock_are_unchanged(s3_settings, s3_bucket):
    storage = S3Storage(f"s3://{s3_bucket}", s3_settings)
    assert not supports_lock(storage)
    storage.put_bytes(b"x", "k")
    storage.delete("k")
    assert not storage.exists("k")
