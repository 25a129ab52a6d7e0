"""Finding backups in storage by their manifests, the source of truth.

Object names sort by time (`<target>/YYYY/MM/DD/<target>_<UTC>.manifest.json`),
so the newest manifest of a target is the last key in order. An archive
without a manifest is an interrupted upload and is never listed here.
"""

from .backup import read_manifest
from .manifest import Manifest
from .storage import Storage

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
