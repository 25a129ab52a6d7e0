"""Storage in a local (or mounted network) folder, for `file:///abs/dir` URLs.

Design decision: every write goes to a hidden temp sibling
(`.<name>.partial-<random>`), is fsynced, and only then renamed over the final
name with os.replace, so a crash or a full disk never leaves a truncated file
under a real key; list_keys never shows the temp names. The writer holds a
flock on its temp file until the rename, so list_partials can tell the temp
file of a killed writer from one still being written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from backup_pipeline.core.errors import ConfigError, StorageError
from backup_pipeline.core.liveness import flock_held
from backup_pipeline.core.storage.base import (
    check_key,
    check_prefix,
    is_partial_name,
    os_storage_error,
    partial_name,
)

CHUNK = 1024 * 1024


class LocalStorage:
    """Objects are files under a root folder; keys are '/'-separated relative paths."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ConfigError(f"invalid local storage URL {url!r}: use file:///absolute/dir (three slashes)")
        self.root = Path(path)
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def check(self) -> None:
        probe = partial_name(self.root / ".write-check", secrets.token_hex(6))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "xb"):
                pass
            probe.unlink()
        except OSError as exc:
            raise os_storage_error(exc, self.root, "checking the backup folder") from exc

    def put_file(self, local_path: Path, key: str) -> str:
        dest = self._path(key)
        try:
            src = open(local_path, "rb")
        except OSError as exc:
            raise os_storage_error(exc, local_path, "opening upload source") from exc
        with src:
            self._write_atomic(dest, lambda out: _copy(src, out, Path(local_path)))
        return dest.as_uri()

    def put_bytes(self, data: bytes, key: str) -> str:
        dest = self._path(key)
        self._write_atomic(dest, lambda out: out.write(data))
        return dest.as_uri()

    def open_write(self, key: str, size_hint: int = 0, lock: object = None) -> LocalStreamWriter:
        """A writer straight into the object's temp file; commit() renames it into place, close() alone deletes it."""
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_storage_error(exc, dest.parent, "creating folder") from exc
        return LocalStreamWriter(dest)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"object {path.as_uri()} does not exist") from exc
        except OSError as exc:
            raise os_storage_error(exc, path, "opening") from exc

    def download_file(self, key: str, local_path: Path) -> None:
        with self.open_read(key) as src:
            self._write_atomic(Path(local_path), lambda out: _copy(src, out, self._path(key)))

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as src:
            try:
                return src.read()
            except OSError as exc:
                raise os_storage_error(exc, self._path(key), "reading") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            return path.stat().st_size
        except FileNotFoundError as exc:
            raise StorageError(f"object {path.as_uri()} does not exist") from exc
        except OSError as exc:
            raise os_storage_error(exc, path, "reading the size of") from exc

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        start = self.root / prefix.rpartition("/")[0]
        if not start.is_dir():
            return iter(())
        keys = []
        try:
            for dirpath, _dirs, files in os.walk(start, onerror=_raise):
                for name in files:
                    if is_partial_name(name):
                        continue
                    key = Path(dirpath, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        except OSError as exc:
            raise os_storage_error(exc, Path(exc.filename or start), "listing") from exc
        # Sorted so that listing order matches S3's lexicographic order.
        return iter(sorted(keys))

    def list_partials(self, prefix: str = "") -> list[PartialFile]:
        """Temp files of writes under prefix (interrupted ones, or ones in progress)."""
        check_prefix(prefix)
        start = self.root / prefix.rpartition("/")[0]
        found = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if not is_partial_name(name):
                    continue
                path = Path(dirpath, name)
                rel = path.relative_to(self.root).as_posix()
                try:
                    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                except FileNotFoundError:
                    continue  # renamed into place meanwhile
                found.append(PartialFile(rel, path.as_uri(), modified, _writer_alive(path)))
        return sorted(found, key=lambda p: p.path)

    def delete_partial(self, path: str) -> None:
        """Remove a temp file list_partials returned (a relative path; real keys are refused)."""
        parts = path.split("/")
        if not is_partial_name(parts[-1]) or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{path!r} is not a temp file of this storage")
        target = self.root / path
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise os_storage_error(exc, target, "deleting") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise os_storage_error(exc, path, "deleting") from exc

    def _write_atomic(self, dest: Path, write: Callable[[BinaryIO], object]) -> None:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_storage_error(exc, dest.parent, "creating folder") from exc
        tmp = partial_name(dest, secrets.token_hex(6))
        try:
            with open(tmp, "xb") as out:
                _lock_quietly(out.fileno())
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            raise os_storage_error(exc, dest, "writing") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        _fsync_dir(dest.parent)


class LocalStreamWriter:
    """Streams into `.<name>.partial-*` (flocked, so sweepers see a live writer); errors are StorageError."""

    def __init__(self, dest: Path):
        self.dest, self.size = dest, 0
        self.tmp = partial_name(dest, secrets.token_hex(6))
        try:
            self._out = open(self.tmp, "xb")
        except OSError as exc:
            raise os_storage_error(exc, dest, "writing") from exc
        _lock_quietly(self._out.fileno())
        self._done = False

    def write(self, data: bytes) -> int:
        try:
            self._out.write(data)
        except OSError as exc:
            raise os_storage_error(exc, self.dest, "writing") from exc
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def commit(self) -> str:
        try:
            self._out.flush()
            os.fsync(self._out.fileno())
            os.replace(self.tmp, self.dest)
        except OSError as exc:
            raise os_storage_error(exc, self.dest, "writing") from exc
        self._done = True
        self._out.close()
        _fsync_dir(self.dest.parent)
        return self.dest.as_uri()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._out.close()
        if not self._done:
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)
        self._done = True

    def __enter__(self) -> LocalStreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


@dataclass(frozen=True)
class PartialFile:
    path: str  # relative to the storage root
    uri: str
    modified: datetime
    writer_alive: bool | None  # None: the folder cannot tell (no flock)


def _lock_quietly(fd: int) -> None:
    # The writer holds this until the rename, so a sweeper can tell a live write from a dead one.
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _writer_alive(path: Path) -> bool | None:
    try:
        return flock_held(path)
    except OSError:
        return None


def _copy(src: BinaryIO, out: BinaryIO, src_path: Path) -> None:
    """Copy in chunks; read errors name the source, write errors propagate as OSError."""
    while True:
        try:
            chunk = src.read(CHUNK)
        except OSError as exc:
            raise os_storage_error(exc, src_path, "reading") from exc
        if not chunk:
            return
        out.write(chunk)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not supported everywhere, so best effort.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _raise(exc: OSError) -> None:
    raise exc
