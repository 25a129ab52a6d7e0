"""Pytest fixtures for a real S3 endpoint: an in-process moto server speaking the S3 HTTP protocol.

Design decision: tests talk HTTP to `moto.server.ThreadedMotoServer` with an
ordinary boto3 client instead of patching boto3, so signing, addressing style,
multipart uploads and error responses are exercised as against R2 or MinIO.
Each test gets its own bucket, deleted afterwards.
"""

import secrets
from collections.abc import Iterator

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from backup_pipeline.core.storage import S3Settings

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing-secret-key"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on a free localhost port, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_server: str) -> S3Settings:
    return S3Settings(
        endpoint_url=s3_server,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        region="us-east-1",
    )


def _admin_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name="us-east-1",
    )


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh, empty bucket; it and everything in it is removed after the test."""
    name = f"test-{secrets.token_hex(6)}"
    client = _admin_client(s3_server)
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_storage_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/some/prefix"


@pytest.fixture
def s3_auth_enforced(s3_server: str) -> Iterator[None]:
    """Make the moto server check signatures against its (empty) IAM, so every key is rejected.

    Uses moto's /moto-api/reset-auth endpoint; the previous setting is restored afterwards.
    Note the server runs in this process, so this briefly affects any in-process moto use too.
    """
    reply = requests.post(f"{s3_server}/moto-api/reset-auth", data=b"0", timeout=10)
    reply.raise_for_status()
    previous = reply.json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        yield
    finally:
        requests.post(f"{s3_server}/moto-api/reset-auth", data=previous.encode(), timeout=10).raise_for_status()


@pytest.fixture
def s3_lock_bucket(s3_server: str) -> Iterator[str]:
    """A fresh bucket with S3 Object Lock enabled (so also versioned); emptied, bypassing GOVERNANCE locks, afterwards."""
    name = f"test-lock-{secrets.token_hex(6)}"
    client = _admin_client(s3_server)
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                try:
                    client.delete_object(Bucket=name, Key=version["Key"], VersionId=version["VersionId"],
                                         BypassGovernanceRetention=True)
                except client.exceptions.ClientError:
                    pass  # a COMPLIANCE lock: the in-memory server forgets it when it stops
        try:
            client.delete_bucket(Bucket=name)
        except client.exceptions.ClientError:
            pass
