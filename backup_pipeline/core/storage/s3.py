"""Storage in an S3-compatible bucket (Cloudflare R2, AWS S3, MinIO), for `s3://bucket/prefix` URLs.

Design decision: large uploads go through boto3's transfer manager with the
part size fixed before the upload starts (`choose_part_size`), so every part
but the last has the same size, as Cloudflare R2 requires, and memory stays
about part size x concurrency. The client is built with checksum calculation
"when_required" because boto3 >= 1.36 otherwise sends CRC32 trailers R2 rejects.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from botocore.exceptions import (  # cheap; boto3 and s3transfer load only once S3 is used (CLI start-up)
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from backup_pipeline.core.errors import ConfigError, StorageError
from backup_pipeline.core.redact import redact_dsn, redact_text
from backup_pipeline.core.storage.base import ObjectLock, check_key, check_prefix, os_storage_error, partial_name

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every non-final part
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum part size
MAX_PARTS = 9000  # below S3's 10,000-part limit, so s3transfer never resizes parts itself

CREDENTIAL_VARS = "R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
ENDPOINT_VARS = "R2_ENDPOINT (or AWS_ENDPOINT_URL)"
_BAD_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId",
}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded",
    "TooManyRequests", "InternalError", "ServiceUnavailable",
}


def choose_part_size(size: int, configured: int = 16 * MiB) -> int:
    """Part size for a multipart upload of size bytes: equal for all parts, at most MAX_PARTS parts."""
    needed = -(-size // MAX_PARTS)
    needed = -(-needed // MiB) * MiB
    return min(max(configured, needed, MIN_PART_SIZE), MAX_PART_SIZE)


@dataclass(frozen=True)
class S3Settings:
    """How to reach the S3 endpoint; None fields fall back to boto3's defaults."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    region: str | None = None
    part_size: int = 16 * MiB
    max_concurrency: int = 4
    max_attempts: int = 5  # botocore's retries["max_attempts"]: retries after the first try

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.max_attempts < 0:
            raise ConfigError("S3 max_concurrency must be at least 1 and max_attempts at least 0")

    @property
    def effective_region(self) -> str:
        if self.region:
            return self.region
        if self.endpoint_url and "r2.cloudflarestorage.com" in self.endpoint_url:
            return "auto"
        return "us-east-1"

    @property
    def endpoint_label(self) -> str:
        """The endpoint as shown in messages."""
        if self.endpoint_url:
            return redact_dsn(self.endpoint_url)
        return f"AWS S3 ({self.effective_region})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> S3Settings:
        """R2_* variables first, then the standard AWS_* ones; unset keys mean boto3's default chain."""

        def get(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        if get("R2_ACCESS_KEY_ID"):
            key_id, secret = get("R2_ACCESS_KEY_ID"), get("R2_SECRET_ACCESS_KEY")
        else:
            key_id, secret = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
        return cls(
            endpoint_url=get("R2_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            access_key_id=key_id,
            secret_access_key=secret,
            region=get("R2_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        )


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started but never completed or aborted."""

    key: str
    upload_id: str
    initiated: datetime | None


_session_lock = threading.Lock()
_session: Any = None  # boto3.session.Session


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client configured for R2/S3/MinIO; cheap after the first call."""
    import boto3.session
    from botocore.config import Config

    global _session
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max(10, settings.max_concurrency + 2),
        s3={"addressing_style": "path" if settings.endpoint_url else "virtual"},
    )
    # Session construction loads botocore's data files; share one, guarded since it is not thread-safe.
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.effective_region,
            config=config,
        )


class S3Storage:
    """Objects are keys under an optional prefix in one bucket."""

    def __init__(self, url: str, settings: S3Settings | None = None):
        parts = urlsplit(url)
        prefix = unquote(parts.path).strip("/")
        try:
            check_prefix(prefix)
        except ValueError as exc:
            raise ConfigError(f"invalid S3 storage URL {redact_dsn(url)!r}: {exc}") from exc
        if parts.scheme != "s3" or not parts.netloc or "@" in parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"invalid S3 storage URL {redact_dsn(url)!r}: use s3://bucket[/prefix]")
        self.bucket = parts.netloc
        self.prefix = prefix
        self.settings = settings if settings is not None else S3Settings.from_env()
        self.url = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock_enabled: bool | None = None

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.settings.endpoint_label!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Picklable (e.g. for subprocess executors); the client is rebuilt on first use.
        state = self.__dict__.copy()
        state["_client"] = None
        del state["_client_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.settings)
            return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def check(self) -> None:
        with self._errors("checking", None, bucket_check=True):
            self.client.head_bucket(Bucket=self.bucket)

    def put_file(self, local_path: Path, key: str, lock: ObjectLock | None = None) -> str:
        full = self._key(key)
        try:
            size = os.stat(local_path).st_size
        except OSError as exc:
            raise os_storage_error(exc, local_path, "opening upload source") from exc
        part = choose_part_size(size, self.settings.part_size)
        try:
            with self._errors("uploading to", full), self._transfer(part) as manager:
                manager.upload(os.fspath(local_path), self.bucket, full, extra_args=_lock_args(lock)).result()
        except OSError as exc:
            raise os_storage_error(exc, local_path, "reading upload source") from exc
        if lock is not None:
            self.extend_lock(key, lock)  # some servers ignore lock arguments on multipart uploads
        return self.uri(key)

    def put_bytes(self, data: bytes, key: str, lock: ObjectLock | None = None) -> str:
        full = self._key(key)
        with self._errors("uploading to", full):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **_lock_args(lock))
        if lock is not None:
            self.extend_lock(key, lock)
        return self.uri(key)

    def open_write(self, key: str, size_hint: int = 0, lock: ObjectLock | None = None) -> Any:
        """A writer that streams an object of unknown length (core/storage/s3_stream.py); size_hint sizes the parts."""
        from backup_pipeline.core.storage.s3_stream import S3StreamWriter

        part = choose_part_size(size_hint, self.settings.part_size)
        return S3StreamWriter(self, key, part, lock, self.settings.max_concurrency)

    def lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once per Storage)."""
        if self._lock_enabled is None:
            try:
                with self._errors("reading the Object Lock configuration of", None, bucket_check=True):
                    config = self.client.get_object_lock_configuration(Bucket=self.bucket)
                self._lock_enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except StorageError as exc:
                if exc.transient:
                    raise
                self._lock_enabled = False  # no configuration, or a server without Object Lock (R2)
        return self._lock_enabled

    def object_lock(self, key: str) -> ObjectLock | None:
        full = self._key(key)
        try:
            with self._errors("reading the lock of", full):
                head = self.client.head_object(Bucket=self.bucket, Key=full)
        except _NotFound:
            return None
        if head.get("ObjectLockMode") and head.get("ObjectLockRetainUntilDate"):
            return ObjectLock(head["ObjectLockMode"], head["ObjectLockRetainUntilDate"])
        return None

    def extend_lock(self, key: str, lock: ObjectLock) -> ObjectLock:
        """Make the object's lock last at least until lock.until; never shortens it or weakens its mode."""
        current = self.object_lock(key)
        if current is not None and current.until >= lock.until and (current.mode == "COMPLIANCE" or lock.mode == "GOVERNANCE"):
            return current
        mode = "COMPLIANCE" if "COMPLIANCE" in (lock.mode, current.mode if current else None) else lock.mode
        until = max(lock.until, current.until) if current else lock.until
        full = self._key(key)
        with self._errors("locking", full):
            self.client.put_object_retention(Bucket=self.bucket, Key=full,
                                             Retention={"Mode": mode, "RetainUntilDate": until})
        return ObjectLock(mode, until)

    def open_read(self, key: str) -> BinaryIO:
        full = self._key(key)
        with self._errors("reading", full):
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
        return io.BufferedReader(_BodyReader(body, self, full), buffer_size=MiB)  # type: ignore[return-value]

    def download_file(self, key: str, local_path: Path) -> None:
        full = self._key(key)
        dest = Path(local_path)
        tmp = partial_name(dest, secrets.token_hex(6))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self._errors("downloading", full), self._transfer(self.settings.part_size) as manager:
                manager.download(self.bucket, full, os.fspath(tmp)).result()
            os.replace(tmp, dest)
        except OSError as exc:
            raise os_storage_error(exc, dest, "downloading to") from exc
        finally:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with self._errors("reading", full):
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            with body:
                return body.read()

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            with self._errors("checking", full):
                self.client.head_object(Bucket=self.bucket, Key=full)
        except _NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        full = self._key(key)
        with self._errors("reading the size of", full):
            return int(self.client.head_object(Bucket=self.bucket, Key=full)["ContentLength"])

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        return self._list_keys(prefix)

    def _list_keys(self, prefix: str) -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        with self._errors("listing", base + prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # folder placeholders made by some consoles
                        yield obj["Key"][len(base):]

    def delete(self, key: str) -> None:
        full = self._key(key)
        if not self.lock_enabled():
            with self._errors("deleting", full):
                self.client.delete_object(Bucket=self.bucket, Key=full)
            return
        # Object Lock buckets are versioned: a plain delete would only hide the object behind a delete marker.
        lock = self.object_lock(key)
        if lock is not None and lock.until > datetime.now(UTC):
            raise StorageError(f"s3://{self.bucket}/{full} is locked ({lock.mode}) until {lock.until:%Y-%m-%d %H:%M} "
                               "UTC: it cannot be deleted before then; extend retention instead of deleting")
        with self._errors("deleting", full):
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if version["Key"] == full:
                        self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=version["VersionId"])

    def list_incomplete_uploads(self) -> list[IncompleteUpload]:
        """Multipart uploads under the prefix that were never completed (they still cost storage)."""
        base = f"{self.prefix}/" if self.prefix else ""
        found = []
        with self._errors("listing incomplete uploads in", base):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for up in page.get("Uploads", []):
                    found.append(IncompleteUpload(up["Key"][len(base):], up["UploadId"], up.get("Initiated")))
        return found

    def abort_incomplete_upload(self, upload: IncompleteUpload) -> None:
        full = self._key(upload.key)
        with self._errors("aborting the upload of", full):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload.upload_id)

    def _transfer(self, part_size: int) -> Any:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        config = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=self.settings.max_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        return create_transfer_manager(self.client, config)

    @contextmanager
    def _errors(self, action: str, key: str | None, *, bucket_check: bool = False) -> Iterator[None]:
        """Convert boto3/botocore failures in the block to StorageError (a 404 on a key to _NotFound)."""
        from s3transfer.exceptions import RetriesExceededError

        try:
            yield
        except (BotoCoreError, ClientError, RetriesExceededError) as exc:
            raise self._storage_error(exc, action, key, bucket_check) from exc
        except Exception as exc:
            # boto3 wraps upload ClientErrors in S3UploadFailedError; unwrap to classify them.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (BotoCoreError, ClientError)):
                raise self._storage_error(cause, action, key, bucket_check) from exc
            raise

    def _storage_error(self, exc: BaseException, action: str, key: str | None, bucket_check: bool) -> StorageError:
        err = self._classify(exc, action, key, bucket_check)
        message = redact_text(str(err), [self.settings.secret_access_key])
        return type(err)(message, transient=err.transient)

    def _classify(self, exc: BaseException, action: str, key: str | None, bucket_check: bool) -> StorageError:
        endpoint = self.settings.endpoint_label
        target = f"s3://{self.bucket}/{key}" if key is not None else f"bucket '{self.bucket}'"
        from s3transfer.exceptions import RetriesExceededError

        if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
            exc = exc.last_exception
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            detail = f"{code or status}: {error.get('Message') or 'no message'}"
            if code == "NoSuchBucket" or (bucket_check and status == 404):
                return StorageError(
                    f"bucket '{self.bucket}' does not exist at endpoint {endpoint}: create it or fix R2_BUCKET"
                )
            if key is not None and (code in ("NoSuchKey", "NotFound") or status == 404):
                return _NotFound(f"object {target} does not exist")
            if code in _BAD_CREDENTIAL_CODES or (bucket_check and status in (401, 403)):
                return StorageError(
                    f"S3 credentials were rejected by {endpoint} while {action} {target} ({detail}): "
                    f"check {CREDENTIAL_VARS} and that the key may access bucket '{self.bucket}'"
                )
            if code == "AccessDenied" or status in (401, 403):
                return StorageError(
                    f"access denied while {action} {target} at {endpoint} ({detail}): check {CREDENTIAL_VARS} "
                    f"and give that key read, write, list and delete access to bucket '{self.bucket}'"
                )
            transient = code in _TRANSIENT_CODES or status == 429 or status >= 500
            return StorageError(f"S3 error while {action} {target} at {endpoint} ({detail})", transient=transient)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"no S3 credentials for {endpoint} while {action} {target}: set {CREDENTIAL_VARS}")
        if isinstance(exc, SSLError):
            return StorageError(f"TLS error from {endpoint} while {action} {target}: check {ENDPOINT_VARS} ({exc})")
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
            return StorageError(
                f"cannot reach endpoint {endpoint} while {action} {target}: "
                f"check {ENDPOINT_VARS} and the network ({exc})",
                transient=True,
            )
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
            return StorageError(
                f"connection to endpoint {endpoint} failed while {action} {target}: retry ({exc})", transient=True
            )
        return StorageError(f"S3 failure while {action} {target} at {endpoint}: {exc}")


def _lock_args(lock: ObjectLock | None) -> dict[str, Any]:
    if lock is None:
        return {}
    # S3 requires a checksum on writes that carry Object Lock settings; the client sends none by default (R2).
    return {"ObjectLockMode": lock.mode, "ObjectLockRetainUntilDate": lock.until, "ChecksumAlgorithm": "CRC32"}


class _NotFound(StorageError):
    """The object does not exist; a StorageError so callers need not know this type."""


class _BodyReader(io.RawIOBase):
    """A raw stream over a get_object body whose read errors become StorageError."""

    def __init__(self, body: Any, storage: S3Storage, key: str):
        self._body = body
        self._storage = storage
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._storage._errors("reading", self._key):
            try:
                return self._body.readinto(buffer)
            except OSError as exc:
                raise StorageError(
                    f"connection lost while reading s3://{self._storage.bucket}/{self._key}: retry", transient=True
                ) from exc

    def close(self) -> None:
        with suppress(Exception):
            self._body.close()
        super().close()
