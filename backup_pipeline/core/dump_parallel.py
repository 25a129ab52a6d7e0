"""Parallel dump (`dump_jobs: N`): pg_dump's directory format with N workers, stored as ONE streamed tar.

The same REPEATABLE READ transaction as a single-stream dump exports the
snapshot and counts the rows (dump.exported_snapshot / snapshot_facts);
`pg_dump --format=directory --jobs=N --snapshot=<it>` writes one file per
table into the run's stage, each compressed by the worker that dumps it, so N
tables are read and compressed at once. The transaction ends when pg_dump has.
The directory is then streamed as an uncompressed USTAR archive (toc.dat
first), age-encrypted for the target's recipients, hashed as it streams,
through storage.open_write, exactly as a custom-format archive: the stage
holds the directory once, never a second copy. The manifest says
`format: directory`; its compression codec and level are pg_dump's own,
per file (zstd, else lz4 when the pg_dump build links them, else gzip).

Reading one back (fetch.download_plain) unpacks the tar as it downloads,
with the same sha256 check, into a directory that pg_restore reads (`-j` in
drills, `-f -` into psql for atomic restores). Only flat regular files with
plain names are accepted: a member with a path, a link or a device is refused,
so a crafted archive cannot write outside its directory.

pg_dump and its workers run in their own process group, which is killed on
every failure; the leader dies with this process (PR_SET_PDEATHSIG). The
stage directory is removed on every exit path.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from .archive import CHUNK, BackupNames, HashingWriter, compress_stream
from .dump import DumpResult, _pg_dump_error, _StageFile, dump_roles, exported_snapshot, facts_of, snapshot_facts, write_error
from .errors import DumpError, VerifyError
from .pgconn import PgConn
from .pgtools import PgTools

BLOCK = 512
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # toc.dat, 4242.dat.gz, blobs_17.toc…
_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=16)
def _links(exe: str, library: str) -> bool:
    try:
        out = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return library in out


def pg_dump_compression(tools: PgTools, codec: str, level: int) -> tuple[str, str, int]:
    """(`--compress` value, codec, level) for the target's codec: zstd (pg_dump >= 16 built with it), else lz4
    (likewise), else gzip level 1; gzip and none as asked. Each worker compresses its own files."""
    if codec == "none":
        return "0", "none", 0
    if codec == "gzip":
        return str(level), "gzip", level
    if tools.major >= 16:
        exe = tools.path("pg_dump")
        if _links(exe, "libzstd"):
            return f"zstd:{level}", "zstd", level
        if _links(exe, "liblz4"):
            return "lz4:1", "lz4", 1
    return "1", "gzip", 1


def gzip_fallback_warning(tools: PgTools, asked: str, codec: str) -> str | None:
    """What the manifest should say when zstd was asked for but this pg_dump can only gzip."""
    if asked != "zstd" or codec != "gzip":
        return None
    return (f"pg_dump {tools.version} ({tools.bin_dir}) cannot compress with zstd or lz4, so dump_jobs compressed "
            "each file with gzip level 1 (several times zstd's CPU): use PostgreSQL >= 16 client tools built with "
            "zstd (e.g. PGDG's postgresql-client), or dump_jobs: 1")


def _die_with_parent_and_own_group():
    """preexec_fn: a process group of its own (so its workers can be killed with it) and SIGKILL when we die."""
    parent = os.getpid()
    libc = None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        pass

    def preexec() -> None:
        os.setpgid(0, 0)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def dump_directory(
    dsn: str,
    stage_dir: Path,
    names: BackupNames,
    *,
    pg_bin_dir: str | None = None,
    level: int = 1,
    jobs: int = 2,
    lock_wait_timeout_s: int = 300,
    recipients: Sequence[str] = (),
    storage=None,
    lock=None,
) -> DumpResult:
    """dump.dump_database with jobs > 1: see the module docstring. Same arguments, same DumpResult."""
    conn = PgConn.parse(dsn)
    conn.check_not_transaction_pooler()
    started_at = datetime.now(UTC)
    names = dataclasses.replace(names, format="directory")
    stage_dir.mkdir(parents=True, exist_ok=True)
    out_dir = stage_dir / f"{names.base}.dir"
    archive_path = stage_dir / Path(names.archive).name
    partial = archive_path.with_name(archive_path.name + ".partial")
    try:
        with exported_snapshot(conn, pg_bin_dir, lock_wait_timeout_s) as snap:
            tools = snap.tools
            compress, codec, used_level = pg_dump_compression(tools, names.codec, level)
            shutil.rmtree(out_dir, ignore_errors=True)  # pg_dump wants a new directory
            with tempfile.TemporaryFile() as stderr_file:
                proc = subprocess.Popen(
                    [tools.path("pg_dump"), "--format=directory", f"--jobs={jobs}", f"--compress={compress}",
                     f"--snapshot={snap.snapshot_id}", "--no-password", "--no-sync",  # the stored tar is the copy that lasts
                     f"--lock-wait-timeout={int(lock_wait_timeout_s) * 1000}", f"--file={out_dir}",
                     f"--dbname={psycopg.conninfo.make_conninfo(dbname=conn.dbname)}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file,
                    env=conn.subprocess_env(), preexec_fn=_die_with_parent_and_own_group(),
                )
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="row-counts") as pool:
                    counting = pool.submit(snapshot_facts, snap.pg)
                    try:
                        returncode = proc.wait()
                    except BaseException:
                        _kill_group(proc)
                        snap.pg.cancel_safe()
                        raise
                    _kill_group(proc)  # workers left behind by a leader that failed
                    if returncode != 0:
                        snap.pg.cancel_safe()
                        stderr_file.seek(0)
                        raise _pg_dump_error(conn, tools, returncode, stderr_file.read().decode(errors="replace"))
                    row_counts, warnings, inventory = facts_of(counting, conn)
                    if note := gzip_fallback_warning(tools, names.codec, codec):
                        warnings.append(note)
        # The snapshot is released: pg_dump is done. Now the directory streams into storage as one tar.
        members = tar_members(out_dir)
        tar_size = sum(BLOCK + _padded(size) for _, size in members) + 2 * BLOCK
        size_hint = tar_size + tar_size // 64 + CHUNK  # age adds 16 bytes per 64 KiB
        try:
            sink = storage.open_write(names.archive, size_hint, lock) if storage is not None else _StageFile(partial)
            with sink as out:
                writer = HashingWriter(out)
                raw_size = compress_stream(TarStream(out_dir, members), writer, "none", 0, 1, recipients)
                if storage is None:
                    out.flush()
                archive_uri = out.commit() if storage is not None else None
        except OSError as exc:
            raise write_error(exc, partial, conn, stage_dir) from None
        if storage is None:
            os.replace(partial, archive_path)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        partial.unlink(missing_ok=True)

    globals_path, globals_size, globals_sha, globals_warning = dump_roles(conn, tools, stage_dir, names, recipients)
    if globals_warning:
        warnings.append(globals_warning)
    return DumpResult(
        archive_path=archive_path, globals_path=globals_path, codec=codec, compression_level=used_level,
        archive_size=writer.size, archive_sha256=writer.sha256.hexdigest(), raw_size=raw_size,
        globals_size=globals_size, globals_sha256=globals_sha, row_counts=row_counts, snapshot_id=snap.snapshot_id,
        inventory=inventory, server_version=snap.version, pg_dump_version=tools.version, database=conn.dbname,
        started_at=started_at, finished_at=datetime.now(UTC), warnings=warnings, recipients=tuple(recipients),
        archive_uri=archive_uri, format="directory", archive_key=names.archive,
    )


# ---------------------------------------------------------------- writing the tar


def _padded(size: int) -> int:
    return size + (-size) % BLOCK


def tar_members(directory: Path) -> list[tuple[str, int]]:
    """(name, size) of pg_dump's files, toc.dat first; DumpError for anything but flat regular files."""
    members = []
    for entry in sorted(os.scandir(directory), key=lambda e: (e.name != "toc.dat", e.name)):
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or not _MEMBER_NAME.match(entry.name):
            raise DumpError(f"pg_dump wrote {entry.path}, which is not a plain file: its directory cannot be stored")
        members.append((entry.name, st.st_size))
    if not members or members[0][0] != "toc.dat":
        raise DumpError(f"pg_dump left no toc.dat in {directory}: the dump is incomplete")
    return members


class TarStream:
    """Readable USTAR archive of the listed files of a directory, produced as it is read (CHUNK-sized reads)."""

    def __init__(self, directory: Path, members: list[tuple[str, int]]):
        self._chunks = self._generate(directory, members)
        self._current, self._pos = b"", 0

    @staticmethod
    def _generate(directory: Path, members: list[tuple[str, int]]) -> Iterator[bytes]:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o600, int(os.stat(directory / name).st_mtime)
            yield info.tobuf(format=tarfile.USTAR_FORMAT)
            left = size
            with open(directory / name, "rb") as f:
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        raise DumpError(f"{directory / name} shrank while it was being stored")
                    left -= len(chunk)
                    yield chunk
            if size % BLOCK:
                yield bytes(BLOCK - size % BLOCK)
        yield bytes(2 * BLOCK)  # end-of-archive marker

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            rest = self._current[self._pos:] + b"".join(self._chunks)
            self._current, self._pos = b"", 0
            return rest
        while self._pos >= len(self._current):
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._current, self._pos = nxt, 0
        data = self._current[self._pos:self._pos + n]
        self._pos += len(data)
        return data


# ---------------------------------------------------------------- reading it back


class Untar:
    """Writer that unpacks such a tar into `dest` as it arrives; close() raises VerifyError unless it ended whole.

    Refuses (VerifyError) any member that is not a regular file with a plain name (no '/', no '..', no links),
    a name seen twice, a damaged header, and data after the end-of-archive marker that is not zeros.
    """

    def __init__(self, dest: Path):
        self.dest = dest
        self.dest.mkdir()
        self.names: list[str] = []
        self._header = bytearray()
        self._file = None
        self._left = self._pad = self._zeros = 0
        self._ended = False

    def write(self, data: bytes) -> int:
        view, i = memoryview(data), 0
        while i < len(view):
            if self._ended:
                if any(view[i:]):
                    raise VerifyError("the directory archive has data after its end-of-archive marker: it is corrupt")
                break
            if self._file is not None:
                take = min(self._left, len(view) - i)
                self._file.write(view[i:i + take])
                i += take
                self._left -= take
                if not self._left:
                    self._close_file()
            elif self._pad:
                take = min(self._pad, len(view) - i)
                i += take
                self._pad -= take
            else:
                take = min(BLOCK - len(self._header), len(view) - i)
                self._header += view[i:i + take]
                i += take
                if len(self._header) == BLOCK:
                    self._member(bytes(self._header))
                    self._header.clear()
        return len(data)

    def _member(self, block: bytes) -> None:
        if not any(block):
            self._zeros += 1
            self._ended = self._zeros == 2
            return
        if self._zeros:
            raise VerifyError("the directory archive has a lone zero block before a member: it is corrupt")
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError) as exc:
            raise VerifyError(f"the directory archive is corrupt: a member header is damaged ({exc})") from None
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or not _MEMBER_NAME.match(info.name) \
                or info.name in self.names:
            raise VerifyError(f"the directory archive holds member {info.name[:120]!r} ({_kind(info)}), which is "
                              "not one of pg_dump's plain files: refused; do not restore it, take a new backup")
        self.names.append(info.name)
        self._file = open(self.dest / info.name, "xb")
        self._left, self._pad = info.size, (-info.size) % BLOCK
        if not self._left:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._close_file()
        if not self._ended:
            raise VerifyError("the directory archive is truncated: it ends before its end-of-archive marker")
        if "toc.dat" not in self.names:
            raise VerifyError("the directory archive has no toc.dat: it is not a pg_dump directory")

    def abort(self) -> None:
        self._close_file()


def _kind(info: tarfile.TarInfo) -> str:
    if info.issym() or info.islnk():
        return f"a link to {info.linkname[:80]!r}"
    if info.isdir():
        return "a directory"
    if info.isfile():
        return "a file with a path" if "/" in info.name or ".." in info.name else "a file"
    return "a special file"
