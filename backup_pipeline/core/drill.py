"""Restore drills: prove a stored backup restores, in a throwaway server.

The drill reads the backup from storage (never the local stage), checking its
sha256 while it decrypts and decompresses it in one pass (core/fetch.py), and
meanwhile starts a PostgreSQL of a major >= the source's; it creates the roles,
restores with parallel pg_restore, compares the result with the manifest and
runs the target's assertions. Extensions the drill server cannot provide
(Supabase's pgsodium, vault, graphql…) are taken out of the restore list and
reported by name. The server is always stopped and deleted.

A drill that could not run (storage unreachable, no disk for the stage, the
server would not start) raises DrillError instead of returning a result:
it is no evidence about the backup, so no caller can mistake it for a
failed verdict. Everything the drill put in the stage is removed on every
exit path.
"""

import contextlib
import errno
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from .backup import read_globals, read_manifest
from .dump import server_version, tools_for
from .encryption import identities_for, is_encrypted
from .ephemeral import RESTORE_SETTINGS, EphemeralPostgres
from .fetch import download_plain, is_directory_format, stream_plain
from .errors import ConfigError, ConnectionFailed, DrillError, PgToolError, StorageError, VerifyError
from .pgconn import PgConn
from .restore import create_missing_roles
from .storage import Storage
from .verify import AssertionResult, Comparison, compare_with_manifest, run_assertions

# pg_restore is most of a drill's time; past 4 workers the disk, not the CPU, is the limit.
DRILL_JOBS = min(os.cpu_count() or 1, 4)
_TOC_EXTENSION = re.compile(r"^\d+; \d+ \d+ EXTENSION - (\S+)")
_TOC_EXTENSION_COMMENT = re.compile(r"^\d+; \d+ \d+ COMMENT - EXTENSION (\S+)")
_TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)
_NO_SPACE = "No space left on device"


@dataclass
class DrillResult:
    backup_id: str
    target: str
    manifest_uri: str
    restorable: bool = False
    reasons: list[str] = field(default_factory=list)
    skipped_extensions: list[str] = field(default_factory=list)
    restore_errors: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    assertions: list[AssertionResult] = field(default_factory=list)
    server_version: str | None = None
    restore_seconds: float | None = None
    restored_bytes: int | None = None
    read_from_copy: str | None = None  # why and which second copy was read, when the primary failed
    streamed: bool = False  # the stage had no room for the dump: it streamed into a serial pg_restore

    @property
    def row_counts_match(self) -> bool:
        return self.comparison is not None and self.comparison.row_counts_match

    @property
    def assertions_pass(self) -> bool:
        return all(a.ok for a in self.assertions)

    @property
    def passed(self) -> bool:
        return self.restorable and self.comparison is not None and self.comparison.ok and self.assertions_pass

    @property
    def reason(self) -> str:
        if self.passed:
            skipped = f"; skipped extensions: {', '.join(self.skipped_extensions)}" if self.skipped_extensions else ""
            copy = f"; {self.read_from_copy}" if self.read_from_copy else ""
            streamed = "; streamed into a serial pg_restore (no room on the stage for the dump)" if self.streamed else ""
            return f"restored and matched the manifest in {self.restore_seconds:.1f}s{skipped}{copy}{streamed}"
        return "; ".join(self.reasons + ([self.read_from_copy] if self.read_from_copy else [])) or "drill failed"

    def to_detail(self) -> dict:
        return {
            "reason": self.reason,
            "passed": self.passed,
            "restorable": self.restorable,
            "row_counts_match": self.row_counts_match,
            "assertions_pass": self.assertions_pass,
            "skipped_extensions": self.skipped_extensions,
            "restore_errors": self.restore_errors[:50],
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "assertions": [asdict(a) for a in self.assertions],
            "server_version": self.server_version,
            "restore_seconds": self.restore_seconds,
            "restored_bytes": self.restored_bytes,
            "read_from_copy": self.read_from_copy,
            "streamed": self.streamed,
        }


def manifest_uri_of(record) -> str:
    """The manifest of a backup history row, or ConfigError for an attempt that has none (running or failed)."""
    if not record.manifest_uri:
        raise ConfigError(f"backup {record.id} is {record.status} and has no manifest: nothing to drill; "
                          "drill a completed backup (see `backup-pipeline list`)")
    return record.manifest_uri


def filter_toc(toc: str, skipped_extensions: set[str], skipped_tables: set[str]) -> str:
    """The restore list with the skipped extensions' entries commented out."""
    out = []
    for line in toc.splitlines():
        match = _TOC_EXTENSION.match(line) or _TOC_EXTENSION_COMMENT.match(line)
        data = _TOC_TABLE_DATA.match(line)
        skip = (match and match.group(1) in skipped_extensions) or (
            data and f"{data.group(1)}.{data.group(2)}" in skipped_tables
        )
        out.append(f";{line}" if skip else line)
    return "\n".join(out) + "\n"


def restore_errors(stderr: str) -> list[str]:
    """pg_restore's errors, one line each with the command that failed."""
    errors, current = [], None
    for line in stderr.splitlines():
        if line.startswith("pg_restore: error:"):
            if current:
                errors.append(current)
            current = line.removeprefix("pg_restore: error:").strip()
        elif current and line.strip().startswith("Command was:"):
            current += f" [{line.strip().removeprefix('Command was:').strip()[:160]}]"
        elif line.startswith("pg_restore: warning: errors ignored on restore"):
            continue
    if current:
        errors.append(current)
    return errors


def drill_backup(
    storage: Storage,
    manifest_key: str,
    *,
    stage_dir: Path,
    assertion_files: list[Path] = (),
    server_major: int | None = None,
    jobs: int = DRILL_JOBS,
) -> DrillResult:
    """Drill one backup: a DrillResult whenever the drill ran (passed or not), DrillError when it could not.

    Verdict failed: the archive is missing or does not match its manifest, it
    does not decompress, pg_restore fails, the result differs from the
    manifest, an assertion fails. DrillError: storage unreachable, no space on
    the stage or the drill server, the drill server would not start. A
    manifest that is not valid JSON raises VerifyError (the backup is bad).
    """
    for path in assertion_files:
        if not Path(path).is_file():
            raise DrillError(f"assertion file {path} does not exist: fix the target's assertions list")
    try:
        manifest = read_manifest(storage, manifest_key)
    except StorageError as exc:
        raise DrillError(f"could not read manifest {storage.uri(manifest_key)}: {exc}") from None
    result = DrillResult(backup_id=manifest["backup_id"], target=manifest["target"], manifest_uri=storage.uri(manifest_key))
    created = not stage_dir.exists()
    try:
        with _on_stage(stage_dir, manifest):
            try:
                stage_dir.mkdir(parents=True, exist_ok=True)
                work = Path(tempfile.mkdtemp(dir=stage_dir, prefix="drill-"))
            except OSError as exc:
                if _local_os_error(exc):
                    raise
                raise DrillError(f"cannot use the drill stage {stage_dir} ({exc.strerror or exc}): "
                                 "set BACKUP_STAGE_DIR to a writable folder") from None
        try:
            _drill_in(storage, manifest, stage_dir, work, assertion_files, server_major, jobs, result)
            result.read_from_copy = "; ".join(getattr(storage, "notes", [])) or None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if created:
            with contextlib.suppress(OSError):
                stage_dir.rmdir()  # only if empty: another step of the run may still use it
    return result


def _drill_in(storage, manifest, stage_dir: Path, work: Path, assertion_files, server_major, jobs: int,
              result: DrillResult) -> None:
    plain = work / "plain.dump"
    source_major = int(manifest["server_version"].split(".")[0])
    # No room for the archive's decompressed dump (which parallel pg_restore needs as a file): stream it
    # straight into a serial pg_restore instead, so a big database still drills on a small stage.
    result.streamed = not is_directory_format(manifest) and _free_bytes(stage_dir) < _needed_bytes(manifest)
    # The archive downloads (checked, decrypted, decompressed on the same pass) while the server starts;
    # the server starts here, in the caller's long-lived thread, because PDEATHSIG follows the starting thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drill-download") as pool:
        fetching = pool.submit(_fetch, storage, manifest, stage_dir, plain, result)
        server, not_started = None, None
        try:
            server = EphemeralPostgres(server_major, min_major=None if server_major else source_major,
                                       settings=RESTORE_SETTINGS).start()
        except PgToolError as exc:
            not_started = exc
        try:
            globals_sql = fetching.result()
        except BaseException:
            if server is not None:
                server.stop()
            raise
    if not_started is not None:
        if globals_sql is not _VERDICT:
            raise DrillError(f"the throwaway PostgreSQL for the drill would not start: {not_started}") from None
        return
    if globals_sql is _VERDICT:
        server.stop()
        return
    try:
        with _on_stage(stage_dir, manifest):
            source = _Streamed(storage, manifest, plain) if result.streamed else plain
            _restore_and_check(server, manifest, source, globals_sql, assertion_files, jobs, result)
    except (PgToolError, ConnectionFailed, psycopg.OperationalError) as exc:
        raise DrillError(f"the drill server stopped answering during the drill: {_one_line(exc)}") from None
    except StorageError as exc:
        raise DrillError(f"could not download backup {result.backup_id}: {exc}") from None
    finally:
        server.stop()
    if any(_NO_SPACE in e for e in result.restore_errors):
        # The drill server's disk, not the backup: no verdict.
        raise DrillError(f"the drill server ran out of disk space in {tempfile.gettempdir()} while restoring: "
                         "free space there (or set TMPDIR to a larger disk) and drill again")


_VERDICT = object()  # _fetch's answer when the backup already failed its drill


def _fetch(storage, manifest, stage_dir: Path, plain: Path, result: DrillResult):
    """Download the archive as the plain dump and read the roles file; _VERDICT if that failed the backup."""
    with _on_stage(stage_dir, manifest):
        if not result.streamed:
            _check_space(stage_dir, manifest)
        try:
            if result.streamed:
                if is_encrypted(manifest):
                    identities_for(manifest)  # IdentityMissing now, as the download would raise it
            else:
                download_plain(storage, manifest, plain)
            return read_globals(storage, manifest)
        except VerifyError as exc:
            result.reasons.append(str(exc))
            return _VERDICT
        except StorageError as exc:
            if _local_os_error(exc):
                raise
            missing = _missing_object(storage, manifest)
            if missing is None:
                raise DrillError(f"could not download backup {result.backup_id}: {exc}") from None
            result.reasons.append(f"{missing} is missing from storage although its manifest is there: "
                                  "the backup is incomplete; do not restore it, take a new backup")
            return _VERDICT


def _missing_object(storage: Storage, manifest: dict) -> str | None:
    """The uri of the backup's archive or roles file if storage says it is gone; None if storage cannot say."""
    keys = [manifest["archive"]["key"], *([manifest["globals"]["key"]] if manifest.get("globals") else [])]
    try:
        return next((storage.uri(k) for k in keys if not storage.exists(k)), None)
    except StorageError:
        return None


def _local_os_error(exc: BaseException) -> OSError | None:
    """The OSError behind exc if it is a failure of the local disk (full, quota, I/O error)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _needed_bytes(manifest: dict) -> int:
    archive = manifest["archive"]
    if manifest.get("format") == "directory":  # unpacked as it downloads; pg_dump's files stay compressed
        return archive["size_bytes"]
    # Archive and decompressed dump sit on the stage together until the archive is deleted.
    return archive["size_bytes"] + (archive.get("uncompressed_size_bytes") or archive["size_bytes"])


def _stage_full(stage: Path, manifest: dict, errno_name: str = "ENOSPC") -> DrillError:
    needed, free = _needed_bytes(manifest), _free_bytes(stage)
    # Enough bytes free afterwards: something else filled the disk meanwhile, or it has no inodes left.
    why = "" if free < needed else " (the disk filled up during the drill or has no inodes left)"
    return DrillError(
        f"no space for the drill in stage {stage} ({errno_name}): it needs {needed} bytes ({_mib(needed)}), "
        f"{free} bytes ({_mib(free)}) are free{why}: set BACKUP_STAGE_DIR to a folder on a larger disk"
    )


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def _check_space(stage: Path, manifest: dict) -> None:
    if _free_bytes(stage) < _needed_bytes(manifest):
        raise _stage_full(stage, manifest)


@contextlib.contextmanager
def _on_stage(stage: Path, manifest: dict) -> Iterator[None]:
    """Turn a full or failing stage disk (ENOSPC, EDQUOT, EIO) into a DrillError naming the stage and the fix."""
    try:
        yield
    except (OSError, StorageError) as exc:
        cause = _local_os_error(exc)
        if cause is None:
            raise
        if cause.errno == errno.EIO:
            raise DrillError(f"I/O error on the drill stage {stage}: {cause}; check that disk or "
                             "set BACKUP_STAGE_DIR to a folder on another one") from None
        raise _stage_full(stage, manifest, errno.errorcode.get(cause.errno, "ENOSPC")) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


@dataclass
class _Streamed:
    """The archive as a stream from storage, for a stage with no room for it (list_path: the restore list)."""

    storage: Storage
    manifest: dict
    plain: Path

    @property
    def list_path(self) -> Path:
        return self.plain.with_suffix(".list")


@dataclass
class _Ran:
    returncode: int
    stdout: str
    stderr: str
    damaged: str | None = None  # the VerifyError of a streamed archive that did not match its manifest


def _pg_restore(args: list[str], source: "Path | _Streamed", env: dict) -> _Ran:
    """Run pg_restore on the dump file, or on the archive streamed into its stdin from storage.

    A streamed archive whose stored bytes turn out damaged is reported in `damaged`; a reader that stops
    early (-l reads the table of contents only) is no error.
    """
    if not isinstance(source, _Streamed):
        done = subprocess.run([*args, str(source)], capture_output=True, text=True, env=env)
        return _Ran(done.returncode, done.stdout, done.stderr)
    damaged = None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env)
        try:
            try:
                stream_plain(source.storage, source.manifest, proc.stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # pg_restore stopped reading: it says why (or -l is done)
            except VerifyError as exc:  # pg_restore got all it could read; say why it ended there
                damaged = str(exc)
        except BaseException:
            proc.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
        out.seek(0)
        err.seek(0)
        return _Ran(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"), damaged)


def _restore_and_check(server, manifest, source: "Path | _Streamed", globals_sql, assertion_files, jobs: int,
                       result: DrillResult) -> None:
    result.server_version = server.version
    dsn = server.create_database("drill")
    conn = PgConn.parse(dsn)
    with conn.connect(autocommit=True) as pg:
        if globals_sql:
            create_missing_roles(pg, globals_sql)
        available = {r[0] for r in pg.execute("SELECT name FROM pg_available_extensions").fetchall()}
        version = server_version(pg)
    extensions = (manifest.get("inventory") or {}).get("extensions", {})
    skipped = sorted(set(extensions) - available)
    result.skipped_extensions = skipped
    skipped_tables = {t for name in skipped for t in extensions[name].get("config_tables", [])}
    tools = tools_for(conn, max(int(version.split(".")[0]), int(manifest["pg_dump_version"].split(".")[0])), None,
                      purpose="restore into")
    env = conn.subprocess_env()
    toc = _pg_restore([tools.path("pg_restore"), "-l"], source, env)
    if toc.returncode != 0:
        result.reasons.append(toc.damaged or f"pg_restore cannot read the archive: {toc.stderr.strip()[-500:]}")
        return
    list_file = source.list_path if isinstance(source, _Streamed) else source.with_suffix(".list")
    list_file.write_text(filter_toc(toc.stdout, set(skipped), skipped_tables))
    started = time.monotonic()
    proc = _pg_restore(
        [tools.path("pg_restore"), "--no-password", f"--jobs={1 if isinstance(source, _Streamed) else max(jobs, 1)}",
         f"--use-list={list_file}", f"--dbname={psycopg.conninfo.make_conninfo(dbname='drill')}"],
        source, env,
    )
    result.restore_seconds = time.monotonic() - started
    result.restore_errors = restore_errors(proc.stderr)
    result.restorable = proc.returncode == 0 and not result.restore_errors
    if proc.damaged:  # the stored bytes did not match the manifest: the copy restored is no evidence
        result.restorable = False
        result.reasons.append(proc.damaged)
    if not result.restorable:
        result.reasons.append(
            f"pg_restore reported {len(result.restore_errors) or 'an'} error(s): "
            + "; ".join(result.restore_errors[:3] or [proc.stderr.strip()[-300:]])
        )
    with conn.connect() as pg:
        result.comparison = compare_with_manifest(pg, manifest, set(skipped))
        result.reasons += result.comparison.reasons()
        result.assertions = run_assertions(pg, list(assertion_files))
        result.reasons += [f"assertion {a.name!r} ({Path(a.file).name}) failed: {a.detail}" for a in result.assertions if not a.ok]
        result.restored_bytes = pg.execute("SELECT pg_database_size(current_database())").fetchone()[0]
