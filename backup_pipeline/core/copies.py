"""Second copies (3-2-1): each backup also stored, byte for byte, at the target's `copies` locations.

After the primary is published, its stored objects are fetched once and
every copy receives the archive, roles file and manifest under the same names (manifest last, so a copy too is complete
exactly when its manifest is there), then is read back and checked against the
manifest's sha256. Design decision: a copy that still fails after its retries
is recorded as `failed` and alerted, but does not fail the backup (the primary
is complete and verified); readers list the copies from the manifest, so a
drill or restore can fall back to one without the history database.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .archive import manifest_bytes, sha256_of
from .backup import check_digest, split_backup_uri, verify_checksum
from .errors import StorageError, VerifyError
from .object_lock import lock_for
from .storage import Storage

COPY_RETRIES = 3
COPIED, FAILED = "copied", "failed"


@dataclass
class CopyOutcome:
    url: str
    state: str
    manifest_uri: str | None
    detail: str
    attempts: int
    at: str

    def to_dict(self) -> dict:
        return asdict(self)


def make_copies(
    copy_urls: list[str] | tuple[str, ...],
    primary: Storage,
    manifest: dict,
    manifest_key: str,
    storage_for: Callable[[str], Storage],
    work_dir: Path,
    *,
    lock_mode: str | None = None,
    retention_until: datetime | None = None,
    retries: int = COPY_RETRIES,
    wait_seconds: float = 1.0,
) -> list[CopyOutcome]:
    """Copy the published backup from the primary to each copy and verify it there; one outcome per copy.

    The stored bytes are fetched once into work_dir (checked against the manifest), so every copy
    holds exactly what the primary holds, encrypted or not. Never raises for a copy's failure.
    """
    keys = [manifest["archive"], *([manifest["globals"]] if manifest.get("globals") else [])]
    work_dir.mkdir(parents=True, exist_ok=True)
    local = {}
    try:
        for meta in keys:
            path = work_dir / Path(meta["key"]).name
            primary.download_file(meta["key"], path)
            with open(path, "rb") as f:
                digest, size = sha256_of(f)
            check_digest(primary.uri(meta["key"]), digest, size, {"size_bytes": size, **meta})
            local[meta["key"]] = path
        return [_copy_to(url, local, manifest, manifest_key, storage_for, lock_mode, retention_until, retries, wait_seconds)
                for url in copy_urls]
    except (StorageError, VerifyError) as exc:
        return [CopyOutcome(url, FAILED, None, f"copy to {url} not made: reading the primary failed: {exc}", 0, _now())
                for url in copy_urls]
    finally:
        for path in local.values():
            path.unlink(missing_ok=True)


def _copy_to(url, local: dict, manifest: dict, manifest_key: str, storage_for, lock_mode, retention_until, retries: int,
             wait_seconds: float) -> CopyOutcome:
    detail, attempt = "", 0
    for attempt in range(1, retries + 1):
        try:
            storage = storage_for(url)
            lock = lock_for(storage, lock_mode, retention_until) if retention_until else None
            kw = {"lock": lock} if lock is not None else {}
            for key, path in local.items():
                storage.put_file(path, key, **kw)
            manifest_uri = storage.put_bytes(manifest_bytes(manifest), manifest_key, **kw)  # last
            digest, _size = verify_checksum(storage, manifest)
            return CopyOutcome(url, COPIED, manifest_uri, f"sha256 {digest} matches the manifest", attempt, _now())
        except (StorageError, VerifyError) as exc:
            detail = str(exc)
            if attempt < retries:
                time.sleep(wait_seconds * 2 ** (attempt - 1))
    return CopyOutcome(url, FAILED, None, f"copy to {url} failed after {attempt} attempts: {detail}", attempt, _now())


def copy_uris(record) -> tuple[str, ...]:
    """The objects of a backup's successful copies, manifest first in each, from its history row."""
    primary = [u for u in (record.manifest_uri, record.archive_uri, record.globals_uri) if u]
    return tuple(f"{c['url'].rstrip('/')}/{split_backup_uri(u)[1]}"
                 for c in (record.copies or []) if c.get("state") == COPIED for u in primary)


def _now() -> str:
    return datetime.now(UTC).isoformat()
