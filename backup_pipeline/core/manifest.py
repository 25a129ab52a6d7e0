"""`Manifest`: a backup's manifest as a typed value instead of lookups by string in a dict.

The design decision: adoption is gradual, so the dict stays the stored and passed-around form
(archive.parse_manifest / manifest_bytes) and `Manifest.from_dict(d).to_dict() == d` holds for every
manifest, including keys this class does not know (kept in `extra`) and optional keys an older
writer left out (not added back). New code reads fields; old code keeps its dict until it moves.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import VerifyError


@dataclass(frozen=True)
class StoredObject:
    """One object a manifest lists: the archive or the roles file, relative to the storage base."""

    key: str
    size_bytes: int
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. uncompressed_size_bytes of the archive

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StoredObject":
        return cls(key=data["key"], size_bytes=data["size_bytes"], sha256=data["sha256"],
                   extra={k: v for k, v in data.items() if k not in ("key", "size_bytes", "sha256")})

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size_bytes": self.size_bytes, "sha256": self.sha256, **self.extra}


_REQUIRED = ("format_version", "backup_id", "target", "type", "started_at", "archive")


@dataclass(frozen=True)
class Manifest:
    format_version: int
    backup_id: str
    target: str
    type: str
    started_at: str  # ISO-8601, as stored
    archive: StoredObject
    finished_at: str | None = None
    duration_seconds: float | None = None
    database: str | None = None
    server_version: str | None = None
    pg_dump_version: str | None = None
    format: str | None = None
    compression: dict[str, Any] | None = None
    globals: StoredObject | None = None
    row_counts: dict[str, int] | None = None
    inventory: dict[str, Any] | None = None
    snapshot_id: str | None = None
    dagster_run_id: str | None = None
    created_by: str | None = None
    warnings: list[str] | None = None
    encryption: dict[str, Any] | None = None
    copies: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer writer added
    _present: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> "Manifest":
        missing = [k for k in _REQUIRED if data.get(k) is None]
        if missing:
            raise VerifyError(f"{where} lacks {', '.join(missing)}: it was not written by backup_pipeline or was cut short")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "_present"}
        values = {k: v for k, v in data.items() if k in known}
        values["archive"] = StoredObject.from_dict(data["archive"])
        values["globals"] = StoredObject.from_dict(data["globals"]) if data.get("globals") else None
        return cls(**values, extra={k: v for k, v in data.items() if k not in known}, _present=frozenset(data))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "_present"):
                continue
            value = getattr(self, f.name)
            if value is None and self._present and f.name not in self._present:
                continue  # an older writer left it out: keep it out
            out[f.name] = value.to_dict() if isinstance(value, StoredObject) else value
        return {**out, **self.extra}
