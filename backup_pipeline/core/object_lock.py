"""Immutable backups with S3 Object Lock: objects locked until the backup's retention date.

When the bucket has Object Lock enabled, the archive, roles file and manifest
are uploaded locked (GOVERNANCE by default, COMPLIANCE per target) until the
backup's `retention_until`; `keep --days/--forever` extends the locks, never
shortens them. Design decision: the lock dates live on the objects themselves
(the storage is the authority), so retention asks storage before deleting
and reports a still-locked object in retention_log instead of trying.
"""

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from .backup import split_backup_uri
from .storage import Storage
from .storage.base import ObjectLock, locked_until, supports_lock

DEFAULT_MODE = "GOVERNANCE"


def lock_for(storage: Storage, mode: str | None, until: datetime) -> ObjectLock | None:
    """The lock to upload a backup's objects with, or None when the storage has no Object Lock."""
    return ObjectLock(mode or DEFAULT_MODE, until) if supports_lock(storage) else None


def extend_locks(uris: Iterable[str], mode: str | None, until: datetime,
                 storage_for: Callable[[str], Storage]) -> list[str]:
    """Extend the locks of a backup's objects to until; returns the uris now locked (none off Object Lock)."""
    extended = []
    for uri in uris:
        base, key = split_backup_uri(uri)
        storage = storage_for(base)
        if supports_lock(storage):
            storage.extend_lock(key, ObjectLock(mode or DEFAULT_MODE, until))  # type: ignore[attr-defined]
            extended.append(uri)
    return extended


def still_locked(uris: Iterable[str], storage_for: Callable[[str], Storage],
                 now: datetime | None = None) -> tuple[str, ObjectLock] | None:
    """The first object whose lock has not run out yet, with its lock."""
    now = now or datetime.now(UTC)
    for uri in uris:
        base, key = split_backup_uri(uri)
        lock = locked_until(storage_for(base), key)
        if lock is not None and lock.until > now:
            return uri, lock
    return None


def extend_backup_locks(record, mode: str | None = None,
                        storage_for: Callable[[str], Storage] | None = None) -> list[str]:
    """After `keep`: lock the backup's objects until its (new) retention_until; returns the uris locked."""
    from .storage import open_storage

    uris = [u for u in (record.manifest_uri, record.archive_uri, record.globals_uri) if u]
    return extend_locks(uris, mode, record.retention_until, storage_for or open_storage)
