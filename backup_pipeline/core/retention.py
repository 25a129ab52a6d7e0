"""Retention: which backups expire, deleting their objects, and sweeping failed uploads.

Failed uploads are archives without a manifest, unfinished multipart
uploads (S3) and hidden temp files of local writes whose writer is gone.

Safety rules, in order: a target's newest good backup (verified, or
checksum_ok where drills are off) is never expired, whatever the policy says,
and neither is any of its newest `min_good_backups` good ones, so retention
never leaves a target with fewer (short of good ones, the newest not proven
bad make up the number); backups a grandfather-father-son policy
keeps are not expired either. A backup whose drill could not run keeps its
earlier verdict, so a flaky drill never makes a good backup expendable.
Expiring marks the history row `expired` first ("deleting its objects"),
then deletes the manifest (at the primary, then at each second copy), so the
backup stops counting as complete before its archive goes, then the other
objects, and records the deletion last: a crash half-way leaves an expired row,
never a `completed` one without objects, and the next run resumes the
deletion (deleting an object that is already gone is a no-op).
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .backup import split_backup_uri
from .catalog import MANIFEST_SUFFIX
from .config import Settings, Target
from .history.retention import DELETING_OBJECTS
from .history.models import CHECKSUM_OK, COMPLETED, VERIFICATION_FAILED, VERIFIED
from .copies import copy_uris
from .liveness import pause_if_asked
from .object_lock import still_locked
from .storage import Storage

_STAMP = re.compile(r"_(\d{8}T\d{6}Z)[_.]")
INCOMPLETE_GRACE = timedelta(days=1)
# A writer creates its temp file, then locks it: a younger unlocked one may be starting, not dead.
PARTIAL_SETTLE = timedelta(minutes=1)
DEFAULT_MIN_GOOD = 3  # Target.min_good_backups' default, for targets no longer configured


@dataclass(frozen=True)
class Expiry:
    backup_id: str
    target: str
    started_at: datetime
    retention_until: datetime
    object_uris: tuple[str, ...]  # manifest first
    delete_objects: bool


@dataclass
class RetentionPlan:
    expire: list[Expiry] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (backup_id, why)
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (target, object uri)
    incomplete_uploads: list[tuple[str, str, object]] = field(default_factory=list)  # (target, storage url, upload)
    partial_files: list[tuple[str, str, object]] = field(default_factory=list)  # (target, storage url, PartialFile)

    def to_dict(self) -> dict:
        return {
            "expire": [
                {"backup_id": e.backup_id, "target": e.target, "started_at": e.started_at.isoformat(),
                 "retention_until": e.retention_until.isoformat(), "delete_objects": e.delete_objects,
                 "objects": list(e.object_uris)}
                for e in self.expire
            ],
            "kept": [{"backup_id": b, "why": why} for b, why in self.kept],
            "orphans": [{"target": t, "object": uri} for t, uri in self.orphans],
            "incomplete_uploads": [{"target": t, "storage": url, "key": u.key, "initiated": u.initiated.isoformat()}
                                   for t, url, u in self.incomplete_uploads],
            "partial_files": [{"target": t, "storage": url, "file": p.uri, "modified": p.modified.isoformat()}
                              for t, url, p in self.partial_files],
        }


def gfs_keep(backups: Iterable, target: Target) -> dict[str, str]:
    """Ids a grandfather-father-son policy keeps: the newest backup of each of the last N days/weeks/months."""
    keep: dict[str, str] = {}
    rules = (("daily", target.keep_daily, lambda t: t.strftime("%Y-%m-%d")),
             ("weekly", target.keep_weekly, lambda t: "%d-W%02d" % t.isocalendar()[:2]),
             ("monthly", target.keep_monthly, lambda t: t.strftime("%Y-%m")))
    ordered = sorted(backups, key=lambda r: r.timestamp, reverse=True)
    for label, count, period in rules:
        if not count:
            continue
        periods: list[str] = []
        for record in ordered:
            key = period(record.timestamp)
            if key not in periods:
                if len(periods) == count:
                    break
                periods.append(key)
                keep.setdefault(record.id, f"{label} ({key})")
    return keep


def is_good(record, target: Target | None) -> bool:
    """A completed backup proven restorable (verified), or checksum-checked where drills are off.

    A target no longer configured cannot say whether it drilled, so checksum_ok counts for it too.
    """
    if record.status != COMPLETED:
        return False
    return record.verification_status == VERIFIED or (
        record.verification_status == CHECKSUM_OK and (target is None or not target.drill))


def good_keep(backups: list, target: Target | None) -> dict[str, str]:
    """Ids the safety rules keep: the newest good backup, and enough good ones for min_good_backups.

    Short of good ones, the newest backups not proven bad (pending, e.g. because
    their drill could not run) make up the number: they may be all there is.
    """
    minimum = target.min_good_backups if target else DEFAULT_MIN_GOOD
    ordered = sorted(backups, key=lambda r: r.timestamp, reverse=True)
    good = [r for r in ordered if is_good(r, target)][:minimum]
    keep = {r.id: f"one of the {minimum} newest good backups (min_good_backups: {minimum})" for r in good[1:]}
    if good:
        keep[good[0].id] = f"newest good backup of the target ({good[0].verification_status})"
    unproven = [r for r in ordered if r.status == COMPLETED and r.verification_status != VERIFICATION_FAILED
                and r.id not in keep][:minimum - len(good)]
    for r in unproven:
        could_not = ", its drill could not run" if getattr(r, "drill_error", None) else ""
        keep[r.id] = (f"not proven good yet ({r.verification_status}{could_not}); kept while the target has "
                      f"fewer than {minimum} good backups")
    return keep


def plan_retention(history, settings: Settings, now: datetime, targets: list[str] | None = None) -> RetentionPlan:
    plan = RetentionPlan()
    candidates = [r for r in history.expiry_candidates(now) if not targets or r.target in targets]
    protected: dict[str, dict[str, str]] = {}
    for name in {r.target for r in candidates}:
        target = settings.targets.get(name)
        backups = history.completed_backups(name)
        # The safety reasons win over GFS ones: they are why the backup must stay whatever the policy says.
        protected[name] = {**(gfs_keep(backups, target) if target else {}), **good_keep(backups, target)}
    for record in candidates:
        if why := protected[record.target].get(record.id):
            plan.kept.append((record.id, why))
            continue
        target = settings.targets.get(record.target)
        uris = tuple(u for u in (record.manifest_uri, record.archive_uri, record.globals_uri) if u) + copy_uris(record)
        plan.expire.append(Expiry(
            backup_id=record.id, target=record.target, started_at=record.timestamp,
            retention_until=record.retention_until, object_uris=uris,
            delete_objects=target.delete_expired_objects if target else True,
        ))
    return plan


def stamp_of(key: str) -> datetime | None:
    match = _STAMP.search(key.rsplit("/", 1)[-1])
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if match else None


def find_incomplete(storage: Storage, storage_url: str, target: str, now: datetime, plan: RetentionPlan) -> None:
    """Objects of a backup that never got its manifest, and unfinished multipart uploads, older than a day."""
    keys = list(storage.list_keys(f"{target}/"))
    complete = {k.removesuffix(MANIFEST_SUFFIX) for k in keys if k.endswith(MANIFEST_SUFFIX)}
    for key in keys:
        base = re.sub(r"(\.dump(\.zst|\.gz)?|\.roles\.sql)$", "", key)
        stamp = stamp_of(key)
        if base != key and base not in complete and stamp and now - stamp > INCOMPLETE_GRACE:
            plan.orphans.append((target, storage.uri(key)))
    if hasattr(storage, "list_incomplete_uploads"):
        for upload in storage.list_incomplete_uploads():
            if upload.key.startswith(f"{target}/") and now - upload.initiated > INCOMPLETE_GRACE:
                plan.incomplete_uploads.append((target, storage_url, upload))
    if hasattr(storage, "list_partials"):
        for partial in storage.list_partials(f"{target}/"):
            if partial_is_abandoned(partial, now):
                plan.partial_files.append((target, storage_url, partial))


def partial_is_abandoned(partial, now: datetime) -> bool:
    """A local temp file whose writer is provably dead (and that is not brand new), or past the grace."""
    if partial.writer_alive:
        return False
    age = now - partial.modified
    return age > INCOMPLETE_GRACE or (partial.writer_alive is False and age > PARTIAL_SETTLE)


def apply_retention(plan: RetentionPlan, history, storage_for: Callable[[str], Storage], *, dry_run: bool,
                    log: Callable[[str], None] = lambda _m: None) -> None:
    """Carry out the plan (or only log it with dry_run); every step is recorded in retention_log."""
    for expiry in plan.expire:
        if expiry.delete_objects and (locked := still_locked(expiry.object_uris, storage_for)):
            uri, lock = locked
            log(f"backup {expiry.backup_id} not expired: {uri} is locked ({lock.mode}) until {lock.until:%Y-%m-%d %H:%M} UTC")
            history.log_retention(target=expiry.target, action="locked", backup_id=expiry.backup_id, object_uri=uri,
                                  dry_run=dry_run, detail=f"Object Lock {lock.mode} until {lock.until.isoformat()}: "
                                  "not deleted; retention expires the backup once the lock has run out")
            continue
        log(f"{'would expire' if dry_run else 'expiring'} backup {expiry.backup_id} ({expiry.target}, "
            f"retention until {expiry.retention_until:%Y-%m-%d})")
        history.log_retention(target=expiry.target, action="expire", backup_id=expiry.backup_id, dry_run=dry_run,
                              detail=f"retention_until {expiry.retention_until.isoformat()}")
        if not dry_run:
            history.mark_expired(expiry.backup_id, objects_deleted=False, detail=DELETING_OBJECTS
                                 if expiry.delete_objects else "objects kept (delete_expired_objects: false)")
        if expiry.delete_objects:
            for uri in expiry.object_uris:
                base, key = split_backup_uri(uri)
                log(f"{'would delete' if dry_run else 'deleting'} {uri} (backup {expiry.backup_id})")
                if not dry_run:
                    storage_for(base).delete(key)
                history.log_retention(target=expiry.target, action="delete_object", backup_id=expiry.backup_id,
                                      object_uri=uri, dry_run=dry_run)
                pause_if_asked("retention-after-delete")
            if not dry_run:
                history.mark_expired(expiry.backup_id, objects_deleted=True, detail="objects deleted")
    for target, uri in plan.orphans:
        base, key = split_backup_uri(uri)
        if locked := still_locked([uri], storage_for):
            history.log_retention(target=target, action="locked", object_uri=uri, dry_run=dry_run,
                                  detail=f"incomplete upload object locked ({locked[1].mode}) until "
                                  f"{locked[1].until.isoformat()}: deleted once the lock has run out")
            continue
        log(f"{'would delete' if dry_run else 'deleting'} incomplete upload object {uri}")
        if not dry_run:
            storage_for(base).delete(key)
        history.log_retention(target=target, action="delete_orphan", object_uri=uri, dry_run=dry_run,
                              detail="no manifest after a day: an interrupted upload")
    for target, storage_url, upload in plan.incomplete_uploads:
        storage = storage_for(storage_url)
        log(f"{'would abort' if dry_run else 'aborting'} unfinished multipart upload of {storage.uri(upload.key)}")
        if not dry_run:
            storage.abort_incomplete_upload(upload)
        history.log_retention(target=target, action="abort_multipart", object_uri=storage.uri(upload.key),
                              dry_run=dry_run, detail=f"initiated {upload.initiated.isoformat()}")
    for target, storage_url, partial in plan.partial_files:
        log(f"{'would delete' if dry_run else 'deleting'} temp file of an interrupted local write {partial.uri}")
        if not dry_run:
            storage_for(storage_url).delete_partial(partial.path)
        history.log_retention(target=target, action="delete_partial", object_uri=partial.uri, dry_run=dry_run,
                              detail=f"writer gone; last written {partial.modified.isoformat()}")
