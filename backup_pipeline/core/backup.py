"""Publishing a dumped backup to storage and checking it there.

Order is the guarantee: the archive and roles file go first, `manifest.json`
last, so a manifest in storage always means a complete backup. Anything
without a manifest is an interrupted upload and is never listed as a backup.
"""

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from importlib.metadata import PackageNotFoundError, version

from .config import Target
from .archive import MANIFEST_FORMAT_VERSION, BackupNames, manifest_bytes, parse_manifest, sha256_of
from .dump import DumpResult, dump_database
from .encryption import decrypt_bytes, decrypt_stream, identities_for, is_encrypted, manifest_entry, recipients_for
from .errors import StorageError, VerifyError
from .history.models import SOURCE_MANIFEST
from .storage import Storage
from .storage.base import ObjectLock

if TYPE_CHECKING:
    from .history import BackupRecord, HistoryStore


def package_version() -> str:
    try:
        return version("backup_pipeline")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Published:
    archive_uri: str
    globals_uri: str | None
    manifest_uri: str
    manifest: dict


def build_manifest(
    *, backup_id: str, target: str, backup_type: str, names: BackupNames, dump: DumpResult, dagster_run_id: str | None,
    copies: tuple[str, ...] | list[str] = (),
) -> dict:
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "backup_id": backup_id,
        "target": target,
        "type": backup_type,
        "database": dump.database,
        "started_at": dump.started_at.isoformat(),
        "finished_at": dump.finished_at.isoformat(),
        "duration_seconds": round(dump.duration_seconds, 3),
        "server_version": dump.server_version,
        "pg_dump_version": dump.pg_dump_version,
        "format": dump.format,
        "compression": {"codec": dump.codec, "level": dump.compression_level},
        "archive": {
            "key": dump.archive_key or names.archive,
            "size_bytes": dump.archive_size,
            "sha256": dump.archive_sha256,
            "uncompressed_size_bytes": dump.raw_size,
        },
        "globals": (
            {"key": names.globals, "size_bytes": dump.globals_size, "sha256": dump.globals_sha256}
            if dump.globals_path
            else None
        ),
        "row_counts": dump.row_counts,
        "inventory": dump.inventory,
        "snapshot_id": dump.snapshot_id,
        "dagster_run_id": dagster_run_id,
        "created_by": f"backup_pipeline {package_version()}",
        "warnings": dump.warnings,
        "encryption": manifest_entry(dump.recipients),
        "copies": list(copies),
    }


def publish(storage: Storage, names: BackupNames, dump: DumpResult, manifest: dict,
            lock: ObjectLock | None = None) -> Published:
    """Upload archive, roles file, then the manifest (each locked, given an Object Lock); re-running is safe."""
    kw = {"lock": lock} if lock is not None else {}
    # A streamed dump (dump_database(storage=...)) already stored its archive; only roles and manifest remain.
    archive_uri = dump.archive_uri or storage.put_file(dump.archive_path, dump.archive_key or names.archive, **kw)
    globals_uri = storage.put_file(dump.globals_path, names.globals, **kw) if dump.globals_path else None
    manifest_uri = storage.put_bytes(manifest_bytes(manifest), names.manifest, **kw)
    return Published(archive_uri=archive_uri, globals_uri=globals_uri, manifest_uri=manifest_uri, manifest=manifest)


def read_manifest(storage: Storage, manifest_key: str) -> dict:
    return parse_manifest(storage.get_bytes(manifest_key), storage.uri(manifest_key))


def check_digest(uri: str, digest: str, size: int, expected: dict) -> None:
    """Raise VerifyError unless (digest, size) is what the manifest recorded for the object at uri."""
    if (digest, size) != (expected["sha256"], expected["size_bytes"]):
        raise VerifyError(
            f"{uri} does not match its manifest: sha256 {digest[:16]}…, {size} bytes; expected "
            f"{expected['sha256'][:16]}…, {expected['size_bytes']} bytes: it is corrupt or was replaced; "
            "do not restore it, take a new backup"
        )


def verify_checksum(storage: Storage, manifest: dict) -> tuple[str, int]:
    """Stream the stored archive and compare its sha256 and size with the manifest."""
    expected = manifest["archive"]
    with storage.open_read(expected["key"]) as stream:
        digest, size = sha256_of(stream)
    check_digest(storage.uri(expected["key"]), digest, size, expected)
    globals_meta = manifest.get("globals")
    if globals_meta:
        with storage.open_read(globals_meta["key"]) as stream:
            g_digest, g_size = sha256_of(stream)
        check_digest(storage.uri(globals_meta["key"]), g_digest, g_size, {"size_bytes": g_size, **globals_meta})
    return digest, size


def check_manifest_against_record(manifest: dict, record: "BackupRecord", manifest_uri: str) -> bool:
    """Raise VerifyError if the manifest differs from what the history recorded when the backup was taken.

    The checksum only proves the archive matches the manifest; this catches a
    manifest edited or replaced together with its archive. Returns False when
    the history row was itself rebuilt from the manifest, so only the checksum
    could be checked.
    """
    if record.source == SOURCE_MANIFEST:
        return False
    archive = manifest.get("archive") or {}
    recorded_key = split_backup_uri(record.archive_uri)[1] if record.archive_uri else None
    pairs = [("archive key", archive.get("key"), recorded_key), ("sha256", archive.get("sha256"), record.sha256),
             ("size_bytes", archive.get("size_bytes"), record.size_bytes)]
    if record.row_counts is not None:
        found = manifest.get("row_counts") or {}
        for table in sorted(set(found) | set(record.row_counts)):
            pairs.append((f"row_counts[{table}]", found.get(table), record.row_counts.get(table)))
    for name, in_manifest, in_history in pairs:
        if in_history is not None and in_manifest != in_history:
            raise VerifyError(
                f"{manifest_uri} was edited or replaced: its {name} is {in_manifest!r} but the history recorded "
                f"{in_history!r} when backup {record.id} was taken; do not restore it, take a new backup"
            )
    return True


def download_verified(storage: Storage, manifest: dict, local: Path) -> None:
    """Download the archive to local and check it against the manifest before anyone reads it.

    An age-encrypted archive is checked as stored, then decrypted in place, so local always holds
    the compressed dump; without a key that opens it, IdentityMissing is raised before downloading.
    If the stored archive is corrupt, the storage's second copies (core/storage/fallback.py) are tried.
    """
    from_primary_or_copy(_download_verified, storage, manifest, local)


def from_primary_or_copy(fetch: Callable[[Storage, dict, Path], None], storage: Storage, manifest: dict,
                         dest: Path) -> None:
    """fetch(storage, manifest, dest); if the primary's object is corrupt, the first second copy that verifies."""
    try:
        fetch(storage, manifest, dest)
    except VerifyError as corrupt:
        for copy in getattr(storage, "alternatives", list)():
            try:
                fetch(copy, manifest, dest)
            except (StorageError, VerifyError):
                continue
            storage.note(f"downloaded {manifest['archive']['key']} from copy {copy.url}: the primary's is corrupt ({corrupt})")
            return
        raise


def _download_verified(storage: Storage, manifest: dict, local: Path) -> None:
    key = manifest["archive"]["key"]
    identities = identities_for(manifest) if is_encrypted(manifest) else None
    storage.download_file(key, local)
    with open(local, "rb") as f:
        digest, size = sha256_of(f)
    try:
        check_digest(storage.uri(key), digest, size, manifest["archive"])
        if identities is not None:
            plain = local.with_name(local.name + ".decrypting")
            try:
                with open(local, "rb") as src, open(plain, "wb") as dst:
                    decrypt_stream(src, dst, identities, storage.uri(key))
                os.replace(plain, local)
            finally:
                plain.unlink(missing_ok=True)
    except BaseException:
        local.unlink(missing_ok=True)
        raise


def read_globals(storage: Storage, manifest: dict) -> str | None:
    """The backup's roles file, checked against the manifest and decrypted if it is encrypted; None if it has none."""
    meta = manifest.get("globals")
    if not meta:
        return None
    data = storage.get_bytes(meta["key"])
    check_digest(storage.uri(meta["key"]), hashlib.sha256(data).hexdigest(), len(data), {"size_bytes": len(data), **meta})
    if is_encrypted(manifest):
        data = decrypt_bytes(data, identities_for(manifest), storage.uri(meta["key"]))
    return data.decode()


@dataclass(frozen=True)
class StagedBackup:
    """A dump waiting in the local stage for upload: what one step hands the next."""

    backup_id: str
    target: Target
    backup_type: str
    names: BackupNames
    dump: DumpResult

    def stored(self) -> "StoredBackup":
        return StoredBackup(backup_id=self.backup_id, target=self.target, manifest_key=self.names.manifest,
                            encrypted=bool(self.dump.recipients), new=True)


@dataclass(frozen=True)
class StoredBackup:
    """A backup in storage, what the drill, verify and standby steps need: just uploaded, or picked for a drill.

    target.storage_url is the storage holding it; `new` says it was made by this run (so the run
    materializes the asset), rather than an older backup picked for a drill.
    """

    backup_id: str
    target: Target
    manifest_key: str
    encrypted: bool
    new: bool = False


def check_stored(storage: Storage, manifest_key: str, record: "BackupRecord") -> tuple[str, int, bool]:
    """Checksum verification of a stored backup, for `verify` (CLI) and the verify step alike: the manifest
    against its history row, then the archive's sha256 and size against the manifest. Returns
    (sha256, size, whether the history row had facts to compare); VerifyError when anything differs."""
    manifest = read_manifest(storage, manifest_key)
    compared = check_manifest_against_record(manifest, record, storage.uri(manifest_key))
    digest, size = verify_checksum(storage, manifest)
    return digest, size, bool(compared)


def split_backup_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/prefix/<target>/YYYY/MM/DD/<name>' -> ('s3://bucket/prefix', '<target>/YYYY/MM/DD/<name>')."""
    parts = uri.rsplit("/", 5)
    if len(parts) != 6 or "://" not in parts[0]:
        raise VerifyError(f"{uri!r} is not a backup object URI (<storage>/<target>/YYYY/MM/DD/<name>)")
    return parts[0], "/".join(parts[1:])


def start_backup(history: "HistoryStore", target: Target, *, backup_type: str,
                 dagster_run_id: str | None = None) -> "BackupRecord":
    """Step 1 of every backup (the dump op, take_backup): its `running` history row, which names its objects."""
    return history.start(target=target.name, type=backup_type, dagster_run_id=dagster_run_id,
                         retention_days=target.retention_days)


def dump_stage(target: Target, dsn: str, storage: Storage, record: "BackupRecord", *, backup_type: str,
               stage_dir: Path, log: Callable[[str], None] | None = None) -> StagedBackup:
    """Step 2: dump the target in one snapshot, the archive streaming into storage as pg_dump runs.

    Checks storage first, so a missing bucket fails now, not after an hour of dumping. Parts retry on
    their own; a streamed upload that fails for good raises (and fails the backup): only the roles file
    and the manifest are left for finish_backup. Errors propagate; recording them is the caller's.
    """
    storage.check()
    names = BackupNames.for_backup(target.name, record.timestamp, target.compression, record.id)
    if log is not None:
        from .pgconn import PgConn

        log(f"Dumping {PgConn.parse(dsn).where} (target {target.name}, {backup_type}) to {storage.uri(names.archive)}")
    from .object_lock import lock_for  # object_lock needs this module's split_backup_uri

    result = dump_database(
        dsn, stage_dir, names, pg_bin_dir=target.pg_bin_dir, level=target.compression_level,
        recipients=recipients_for(target), storage=storage,
        lock=lock_for(storage, target.object_lock_mode, record.retention_until), jobs=target.dump_jobs,
    )
    return StagedBackup(backup_id=record.id, target=target, backup_type=backup_type, names=names, dump=result)


def finish_backup(storage: Storage, history: "HistoryStore", staged: StagedBackup, *, dagster_run_id: str | None,
                  copies: tuple[str, ...] | list[str] = (), check: bool = False) -> tuple["BackupRecord", dict]:
    """Step 3: roles file, then the manifest last (each locked, given an Object Lock), then the history row
    `completed`. Returns (the completed row, the manifest). Re-running after a failure is safe.

    A kill at any point before the manifest is in storage leaves no backup (recovery fails the row);
    after it, recovery completes the row from the manifest. check: stream the stored archive back and
    compare it with the manifest before recording the backup completed (VerifyError if it differs).
    """
    from .liveness import pause_if_asked
    from .object_lock import lock_for

    dump = staged.dump
    manifest = build_manifest(backup_id=staged.backup_id, target=staged.target.name, backup_type=staged.backup_type,
                              names=staged.names, dump=dump, dagster_run_id=dagster_run_id, copies=copies)
    lock = lock_for(storage, staged.target.object_lock_mode, history.get(staged.backup_id).retention_until)
    published = publish(storage, staged.names, dump, manifest, lock=lock)
    pause_if_asked("after-publish")
    if check:
        try:
            verify_checksum(storage, manifest)
        except VerifyError:
            # A manifest in storage means a complete backup whose objects match it: take it back.
            storage.delete(staged.names.manifest)
            raise
    record = history.complete(
        staged.backup_id, archive_uri=published.archive_uri, globals_uri=published.globals_uri,
        manifest_uri=published.manifest_uri, size_bytes=dump.archive_size, sha256=dump.archive_sha256,
        row_counts=dump.row_counts, duration_seconds=dump.duration_seconds, server_version=dump.server_version,
        pg_dump_version=dump.pg_dump_version, compression=dump.codec,
    )
    return record, manifest


def take_backup(
    target: Target,
    dsn: str,
    storage: Storage,
    history: "HistoryStore",
    *,
    backup_type: str,
    stage_dir: Path,
    dagster_run_id: str | None = None,
) -> "BackupRecord":
    """Dump, publish, check and record one backup in a single call (safety backups before a restore):
    the backup job's dump and upload steps (start_backup -> dump_stage -> finish_backup) in one go."""
    record = start_backup(history, target, backup_type=backup_type, dagster_run_id=dagster_run_id)
    try:
        staged = dump_stage(target, dsn, storage, record, backup_type=backup_type, stage_dir=stage_dir)
        finish_backup(storage, history, staged, dagster_run_id=dagster_run_id, check=True)
    except Exception as exc:
        history.fail(record.id, str(exc))
        raise
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    return history.set_verification(record.id, "checksum_ok", "sha256 and size match the manifest")
