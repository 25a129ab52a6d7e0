"""A target's primary storage with its second copies behind it, for readers.

Reads (`get_bytes`, `open_read`, `download_file`, `size`) go to the primary
and, when it cannot be reached or lacks the object, to each copy in turn;
every fallback is noted in `notes` so drills and restores can say which copy
they used. Design decision: writes, deletes and everything else go to the
primary only, so publishing, locks and retention behave exactly as without
copies; `alternatives()` lets a reader that found the primary's bytes corrupt
try the copies too.
"""

import errno
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from backup_pipeline.core.errors import StorageError
from backup_pipeline.core.storage.base import Storage

log = logging.getLogger(__name__)


class FallbackStorage:
    def __init__(self, primary: Storage, copies: list[Storage]):
        self.primary, self.copies = primary, copies
        self.url = primary.url
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return f"FallbackStorage({self.primary!r}, copies={[c.url for c in self.copies]!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.primary, name)

    def alternatives(self) -> list[Storage]:
        return list(self.copies)

    def note(self, message: str) -> None:
        self.notes.append(message)
        log.warning(message)

    def _read(self, action: str, key: str, call: Callable[[Storage], Any]) -> Any:
        try:
            return call(self.primary)
        except StorageError as primary_error:
            if _local_disk_error(primary_error):
                raise  # this machine's disk, not the primary: a copy would fail the same way
            failures = [f"{self.primary.uri(key)}: {primary_error}"]
            for copy in self.copies:
                try:
                    result = call(copy)
                except StorageError as exc:
                    failures.append(f"{copy.uri(key)}: {exc}")
                    continue
                self.note(f"{action} {key} from copy {copy.url}: the primary {self.primary.url} failed ({primary_error})")
                return result
            raise StorageError("; ".join(failures), transient=getattr(primary_error, "transient", False)) from None

    def get_bytes(self, key: str) -> bytes:
        return self._read("read", key, lambda s: s.get_bytes(key))

    def open_read(self, key: str) -> BinaryIO:
        return self._read("read", key, lambda s: s.open_read(key))

    def download_file(self, key: str, local_path: Path) -> None:
        self._read("downloaded", key, lambda s: s.download_file(key, local_path))

    def size(self, key: str) -> int:
        return self._read("sized", key, lambda s: s.size(key))


def _local_disk_error(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
