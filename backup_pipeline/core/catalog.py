"""Finding backups in storage by their manifests, the source of truth.

Object names sort by time (`<target>/YYYY/MM/DD/<target>_<UTC>.manifest.json`),
so the newest manifest of a target is the last key in order. An archive
without a manifest is an interrupted upload and is never listed here.
"""

from typing import TYPE_CHECKING

from .backup import read_manifest
from .errors import BackupNotFound
from .manifest import Manifest
from .storage import Storage

if TYPE_CHECKING:
    from .history import HistoryStore

MANIFEST_SUFFIX = ".manifest.json"


def manifest_keys(storage: Storage, target: str) -> list[str]:
    return sorted(k for k in storage.list_keys(f"{target}/") if k.endswith(MANIFEST_SUFFIX))


def latest_manifest_key(storage: Storage, target: str) -> str | None:
    keys = manifest_keys(storage, target)
    return keys[-1] if keys else None


def uris_for(storage: Storage, manifest: dict, manifest_key: str) -> dict[str, str | None]:
    typed = Manifest.from_dict(manifest, f"manifest {storage.uri(manifest_key)}")
    return {
        "manifest_uri": storage.uri(manifest_key),
        "archive_uri": storage.uri(typed.archive.key),
        "globals_uri": storage.uri(typed.globals.key) if typed.globals else None,
    }


def load(storage: Storage, manifest_key: str) -> tuple[dict, dict[str, str | None]]:
    manifest = read_manifest(storage, manifest_key)
    return manifest, uris_for(storage, manifest, manifest_key)


def sync_history(storage: Storage, target: str, history: "HistoryStore", *, retention_days: int | None = None
                 ) -> tuple[int, int]:
    """Record in history every backup of target that storage holds a manifest of (`history sync`).

    Rows already there are left as they are (HistoryStore.upsert_from_manifest); rebuilt ones are
    kept retention_days (the target's; the history's default for a target no longer configured)
    from their start. Returns (added, already_recorded).
    """
    added = existing = 0
    for key in manifest_keys(storage, target):
        manifest, uris = load(storage, key)
        try:
            history.get(Manifest.from_dict(manifest).backup_id)
            existing += 1
        except BackupNotFound:
            added += 1
        history.upsert_from_manifest(manifest, **uris, **({} if retention_days is None else {"retention_days": retention_days}))
    return added, existing
