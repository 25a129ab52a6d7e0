"""The storage interface every backup destination implements, and `open_storage`.

Design decision: a Storage is rooted at a base URL (`file:///dir` or
`s3://bucket/prefix`) and every method takes keys relative to that base, and
every object becomes visible only once it is complete (temp file + rename
locally, single PUT or completed multipart upload on S3). Readers can
therefore trust that any key they see holds a whole object. All failures
leave this package as `StorageError`, never as boto3 or OS exceptions.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable
from urllib.parse import urlsplit

from backup_pipeline.core.errors import ConfigError, StorageError
from backup_pipeline.core.redact import redact_dsn

if TYPE_CHECKING:
    from backup_pipeline.core.storage.s3 import S3Settings

ACCEPTED_FORMS = "file:///absolute/dir or s3://bucket[/prefix]"
PARTIAL_MARKER = ".partial-"


@runtime_checkable
class Storage(Protocol):
    """A folder of objects addressed by keys relative to the storage's base URL."""

    url: str

    def uri(self, key: str) -> str:
        """Full URI of the object at key (file:///... or s3://bucket/prefix/key)."""
        ...

    def check(self) -> None:
        """Raise StorageError now if the destination cannot be written to."""
        ...

    def put_file(self, local_path: Path, key: str) -> str:
        """Upload a local file atomically, streaming; return the object's URI."""
        ...

    def put_bytes(self, data: bytes, key: str) -> str:
        """Store a small object atomically; return the object's URI."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """Open the object for streaming reads; use as a context manager."""
        ...

    def download_file(self, key: str, local_path: Path) -> None:
        """Stream the object to local_path, which appears only when complete."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under the base that start with prefix, recursively, never temp files."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...


LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


@dataclass(frozen=True)
class ObjectLock:
    """S3 Object Lock retention for an object: not deletable or overwritable before `until`."""

    mode: str  # GOVERNANCE (privileged users may lift it) or COMPLIANCE (nobody can)
    until: datetime


def supports_lock(storage: Storage) -> bool:
    """True for storage whose objects can be locked (an S3 bucket with Object Lock enabled)."""
    enabled = getattr(storage, "lock_enabled", None)
    return bool(enabled and enabled())


def locked_until(storage: Storage, key: str) -> ObjectLock | None:
    """The object's lock, if the storage has locks and the object carries one."""
    return storage.object_lock(key) if supports_lock(storage) else None  # type: ignore[attr-defined]


def open_storage(url: str, s3: S3Settings | None = None) -> Storage:
    """Return the Storage for a destination URL; s3 settings default to the environment."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "file":
        from backup_pipeline.core.storage.local import LocalStorage

        return LocalStorage(url)
    if scheme == "s3":
        from backup_pipeline.core.storage.s3 import S3Settings, S3Storage

        return S3Storage(url, s3 if s3 is not None else S3Settings.from_env())
    raise ConfigError(f"unsupported storage URL {redact_dsn(url)!r}: use {ACCEPTED_FORMS}")


def check_key(key: str) -> str:
    """Return key if it names an object safely, else raise ValueError (a caller bug)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key {key!r}: use a relative '/'-separated path, no empty/./.. parts")
    if is_partial_name(parts[-1]):
        raise ValueError(f"invalid storage key {key!r}: '.<name>{PARTIAL_MARKER}*' is reserved for temp files")
    return key


def check_prefix(prefix: str) -> str:
    """Like check_key, but empty and a trailing '/' are allowed."""
    parts = prefix.split("/")
    bad_part = "" in parts[:-1] or any(p in (".", "..") for p in parts)
    if prefix and (prefix.startswith("/") or "\\" in prefix or bad_part):
        raise ValueError(f"invalid storage prefix {prefix!r}: use a relative '/'-separated path, no empty/./.. parts")
    return prefix


def is_partial_name(name: str) -> bool:
    """True for the temporary names atomic local writes use before renaming."""
    return name.startswith(".") and PARTIAL_MARKER in name


def partial_name(final: Path, token: str) -> Path:
    """Temporary sibling of final used while it is being written."""
    return final.with_name(f".{final.name}{PARTIAL_MARKER}{token}")


def os_storage_error(exc: OSError, path: Path | str, action: str) -> StorageError:
    """Turn an OSError on a local path into a StorageError naming the path and the fix."""
    path = Path(path)
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        msg = f"disk full while {action} {path}: free space in {path.parent} or use another folder"
    elif code in (errno.EACCES, errno.EPERM):
        msg = f"permission denied while {action} {path}: give this user access to it or use another folder"
    elif code == errno.EROFS:
        msg = f"read-only file system while {action} {path}: use a writable folder"
    elif code == errno.ENOENT:
        msg = f"{path} does not exist (while {action})"
    elif code == errno.ENOTDIR:
        msg = f"a path component of {path} is a file, not a folder (while {action})"
    else:
        msg = f"error while {action} {path}: {exc.strerror or exc}"
    transient = code in (errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE)
    return StorageError(msg, transient=transient)
