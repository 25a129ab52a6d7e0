"""Publishing a dumped backup to storage and checking it there.

Order is the guarantee: the archive and roles file go first, `manifest.json`
last, so a manifest in storage always means a complete backup. Anything
without a manifest is an interrupted upload and is never listed as a backup.
"""

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from .config import Target
from .archive import MANIFEST_FORMAT_VERSION, BackupNames, manifest_bytes, parse_manifest, sha256_of
from .dump import DumpResult
from .errors import VerifyError
from .storage import Storage


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
    *, backup_id: str, target: str, backup_type: str, names: BackupNames, dump: DumpResult, dagster_run_id: str | None
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
        "format": "custom",
        "compression": {"codec": dump.codec, "level": dump.compression_level},
        "archive": {
            "key": names.archive,
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
        "snapshot_id": dump.snapshot_id,
        "dagster_run_id": dagster_run_id,
        "created_by": f"backup_pipeline {package_version()}",
        "warnings": dump.warnings,
    }


def publish(storage: Storage, names: BackupNames, dump: DumpResult, manifest: dict) -> Published:
    """Upload archive, roles file, then the manifest; re-running after a failure is safe."""
    archive_uri = storage.put_file(dump.archive_path, names.archive)
    globals_uri = storage.put_file(dump.globals_path, names.globals) if dump.globals_path else None
    manifest_uri = storage.put_bytes(manifest_bytes(manifest), names.manifest)
    return Published(archive_uri=archive_uri, globals_uri=globals_uri, manifest_uri=manifest_uri, manifest=manifest)


def read_manifest(storage: Storage, manifest_key: str) -> dict:
    return parse_manifest(storage.get_bytes(manifest_key), storage.uri(manifest_key))


def verify_checksum(storage: Storage, manifest: dict) -> tuple[str, int]:
    """Stream the stored archive and compare its sha256 and size with the manifest."""
    expected = manifest["archive"]
    key = expected["key"]
    with storage.open_read(key) as stream:
        digest, size = sha256_of(stream)
    if size != expected["size_bytes"] or digest != expected["sha256"]:
        raise VerifyError(
            f"{storage.uri(key)} does not match its manifest: sha256 {digest[:16]}… size {size} "
            f"vs expected {expected['sha256'][:16]}… size {expected['size_bytes']}: the stored archive is "
            "corrupt or was replaced; do not restore it, take a new backup"
        )
    globals_meta = manifest.get("globals")
    if globals_meta:
        with storage.open_read(globals_meta["key"]) as stream:
            g_digest, _ = sha256_of(stream)
        if g_digest != globals_meta["sha256"]:
            raise VerifyError(f"{storage.uri(globals_meta['key'])} does not match its manifest sha256")
    return digest, size


@dataclass(frozen=True)
class StagedBackup:
    """A dump waiting in the local stage for upload: what one step hands the next."""

    backup_id: str
    target: Target
    backup_type: str
    names: BackupNames
    dump: DumpResult



def split_backup_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/prefix/<target>/YYYY/MM/DD/<name>' -> ('s3://bucket/prefix', '<target>/YYYY/MM/DD/<name>')."""
    parts = uri.rsplit("/", 5)
    if len(parts) != 6 or "://" not in parts[0]:
        raise VerifyError(f"{uri!r} is not a backup object URI (<storage>/<target>/YYYY/MM/DD/<name>)")
    return parts[0], "/".join(parts[1:])
