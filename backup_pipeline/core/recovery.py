"""Resolving what dead runs left behind: history rows stuck `running` and stage folders.

Design decision: storage, not the dead process, decides a row's fate. A
manifest in storage means the upload finished (it is always written last),
so the row becomes `completed` with the manifest's facts and its archive's
sha256 is checked; no manifest means `failed` ("interrupted") and the parts of
its streamed archive upload are aborted (its temp file, locally). A row is only
touched once its run is provably dead (liveness.RunJudge), and when storage
cannot be read the row is left for the next run rather than guessed at.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .archive import BackupNames
from .backup import read_manifest, verify_checksum
from .catalog import uris_for
from .errors import BackupPipelineError, VerifyError
from .history import CHECKSUM_OK, COMPLETED, FAILED, VERIFICATION_FAILED
from .liveness import LOCK_DIR, RunJudge, holds, is_run_id, release_run, remove_dead_lock, run_info
from .storage import Storage


@dataclass
class Recovery:
    completed: list[str] = field(default_factory=list)  # backup ids
    failed: list[str] = field(default_factory=list)
    stage_dirs_removed: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def interrupted_message(run_id: str) -> str:
    return f"interrupted: the run {run_id} died before finishing"


def manifest_key(record) -> str:
    """Where the row's manifest is if its upload finished: names depend on target, start time and id only."""
    return BackupNames.for_backup(record.target, record.timestamp, "none", record.id).manifest


def storage_urls(record, stage_root: Path, configured: Callable[[str], str | None]) -> list[str]:
    """Storages the row's backup may be in: those its run recorded, then the target's configured one."""
    noted = run_info(stage_root, record.dagster_run_id).get("storages", {}).get(record.target, [])
    urls = [u for u in noted if isinstance(u, str)]
    if (url := configured(record.target)) and url not in urls:
        urls.append(url)
    return urls


def resolve_row(record, history, storages: list[Storage]) -> tuple[str, str]:
    """Resolve one dead row from storage; returns (status, message). Raises StorageError if storage cannot tell."""
    key = manifest_key(record)
    for storage in storages:
        if not storage.exists(key):
            continue
        manifest = read_manifest(storage, key)
        if manifest.get("backup_id") != record.id or manifest.get("target") != record.target:
            continue
        uris = uris_for(storage, manifest, key)
        archive = manifest["archive"]
        finished = manifest.get("finished_at")
        history.complete(
            record.id, archive_uri=uris["archive_uri"], globals_uri=uris["globals_uri"],
            manifest_uri=uris["manifest_uri"], size_bytes=archive["size_bytes"], sha256=archive["sha256"],
            row_counts=manifest.get("row_counts"), duration_seconds=manifest.get("duration_seconds") or 0.0,
            server_version=manifest.get("server_version"), pg_dump_version=manifest.get("pg_dump_version"),
            compression=(manifest.get("compression") or {}).get("codec"),
            finished_at=datetime.fromisoformat(finished) if finished else None,
        )
        try:
            digest, size = verify_checksum(storage, manifest)
        except VerifyError as exc:
            history.set_verification(record.id, VERIFICATION_FAILED, str(exc))
            return COMPLETED, f"backup {record.id} was uploaded before its run died, but {exc}"
        except BackupPipelineError as exc:
            return COMPLETED, f"backup {record.id} was uploaded before its run died; checksum not checked yet ({exc})"
        history.set_verification(record.id, CHECKSUM_OK, f"sha256 {digest} and size {size} match the manifest "
                                 "(checked when recovering from its run's death)")
        return COMPLETED, f"backup {record.id} was uploaded before its run died: completed, checksum ok"
    for storage in storages:
        sweep_interrupted_upload(storage, record)
    history.fail(record.id, interrupted_message(record.dagster_run_id))
    return FAILED, f"backup {record.id} ({record.target}): {interrupted_message(record.dagster_run_id)}"


def sweep_interrupted_upload(storage: Storage, record) -> None:
    """Abort the dead run's streamed upload (S3 multipart parts) or delete its temp file (local), if any."""
    names = BackupNames.for_backup(record.target, record.timestamp, "none", record.id)
    stem = f"{names.directory}/{names.base}."
    if hasattr(storage, "list_incomplete_uploads"):
        for upload in storage.list_incomplete_uploads():
            if upload.key.startswith(stem):
                storage.abort_incomplete_upload(upload)
    if hasattr(storage, "list_partials"):
        for partial in storage.list_partials(f"{names.directory}/"):
            if partial.writer_alive is False and partial.path.rpartition("/")[2].startswith(f".{names.base}."):
                storage.delete_partial(partial.path)


def recover(
    history,
    judge: RunJudge,
    *,
    open_storage: Callable[[str], Storage],
    configured_storage: Callable[[str], str | None],
) -> Recovery:
    """Resolve every `running` row whose run is provably dead, then delete dead runs' stages and locks."""
    out = Recovery()
    unresolved: set[str] = set()
    for record in history.running_backups():
        dead, why = judge.verdict(record.dagster_run_id)
        if not dead:
            continue
        try:
            urls = storage_urls(record, judge.stage_root, configured_storage)
            status, message = resolve_row(record, history, [open_storage(u) for u in urls])
        except (BackupPipelineError, ValueError, KeyError) as exc:
            unresolved.add(record.dagster_run_id)
            out.warnings.append(f"backup {record.id} ({record.target}) is left running: its run is dead ({why}) "
                                f"but {exc}; the next run retries")
            continue
        (out.completed if status == COMPLETED else out.failed).append(record.id)
        out.messages.append(f"{message} ({why})")
    out.stage_dirs_removed = sweep_stages(judge, keep=unresolved)
    return out


def sweep_stages(judge: RunJudge, keep: set[str] = frozenset()) -> list[Path]:
    """Delete `<stage_root>/<run_id>` of every provably dead run, then its lock (unless its rows await storage)."""
    root = judge.stage_root
    removed = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.is_dir() and is_run_id(entry.name) and judge.dead(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    locks = root / LOCK_DIR
    for lock in locks.glob("*.lock") if locks.is_dir() else ():
        run_id = lock.stem
        if is_run_id(run_id) and run_id not in keep and judge.dead(run_id):
            release_run(run_id) if holds(run_id) else remove_dead_lock(root, run_id)
    return removed
