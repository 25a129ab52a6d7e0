"""Telling a full disk from other failures, for errors raised far from the write that failed.

Dagster and SQLite report a full DAGSTER_HOME in several ways ("database or disk
is full", "disk I/O error", even "database disk image is malformed" once a write
was cut short), so the decision is made by looking at the disk itself: an error
counts as disk-full when the directory's filesystem has less than
LOW_SPACE_BYTES left, or its chain says ENOSPC / "disk is full" and the disk is
nearly full.
"""

import errno
import shutil

LOW_SPACE_BYTES = 1 << 20
NEARLY_FULL_BYTES = 64 << 20


def free_bytes(directory: str) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def says_disk_full(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "disk is full" in str(exc) or "No space left on device" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def full_disk_message(directory: str | None, setting: str, exc: BaseException | None = None) -> str | None:
    """One line naming the full directory and the fix, or None if that is not why exc happened."""
    if not directory:
        return None
    free = free_bytes(directory)
    # "disk is full" alone could come from another disk (the stage): blame this one only if it is low too.
    if free is None or not (free < LOW_SPACE_BYTES or (says_disk_full(exc) and free < NEARLY_FULL_BYTES)):
        return None
    return (
        f"{setting} {directory} is full ({free // 1024} KiB free on its disk): free space there or set "
        f"{setting} to a directory on a larger disk, then run the command again"
    )
