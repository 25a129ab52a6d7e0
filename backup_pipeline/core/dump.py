"""Dumping one database: a consistent snapshot, streamed and compressed.

One REPEATABLE READ transaction exports a snapshot; pg_dump runs inside that
snapshot (`--snapshot`) while the same transaction counts every table, so the
manifest's row counts describe exactly what the archive holds, even under
concurrent writes. pg_dump's custom-format output (-Z0) is compressed and
hashed as it streams to a `.partial` file that is renamed only on success.
With `jobs` > 1 (a target's `dump_jobs`) the same snapshot and counts feed a
parallel directory-format pg_dump instead (core/dump_parallel.py).
"""

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from .archive import BackupNames, HashingWriter, compress_stream
from .config import MAX_DUMP_JOBS
from .encryption import encrypt_bytes
from .errors import BackupPipelineError, ConfigError, DumpError, PgToolError
from .inventory import take_inventory
from .locks import lock_database
from .pgconn import PgConn
from .pgtools import PgTools, find_tools
from .redact import redact_text

SSL_REQUIRED_MODES = {"require", "verify-ca", "verify-full"}
# zstd's memory grows with worker threads; past 4 the dump stream, not compression, is the bottleneck.
DEFAULT_THREADS = min(os.cpu_count() or 1, 4)

_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (  -- extension member tables are not dumped
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass
class DumpResult:
    archive_path: Path
    globals_path: Path | None
    codec: str
    compression_level: int
    archive_size: int
    archive_sha256: str
    raw_size: int
    globals_size: int
    globals_sha256: str | None
    row_counts: dict[str, int]
    snapshot_id: str
    inventory: dict
    server_version: str
    pg_dump_version: str
    database: str
    started_at: datetime
    finished_at: datetime
    warnings: list[str] = field(default_factory=list)
    recipients: tuple[str, ...] = ()  # age public keys the archive and roles file are encrypted for
    archive_uri: str | None = None  # set when the archive was streamed straight into storage (no stage copy)
    format: str = "custom"  # pg_dump's format: "custom" (one stream) or "directory" (stored as a tar, dump_jobs > 1)
    archive_key: str | None = None  # the archive's key in storage (names.archive of the format)

    @property
    def server_major(self) -> int:
        return int(self.server_version.split(".")[0])

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def server_version(pg: psycopg.Connection) -> str:
    num = pg.info.server_version
    return f"{num // 10000}.{num % 10000}" if num >= 100000 else f"{num // 10000}.{num // 100 % 100}"


def tools_for(conn: PgConn, major: int, pg_bin_dir: str | None, purpose: str = "dump") -> PgTools:
    need_ssl = conn.params.get("sslmode") in SSL_REQUIRED_MODES
    try:
        return find_tools(major, pg_bin_dir=pg_bin_dir, need_ssl=need_ssl, purpose=purpose, subject="PostgreSQL")
    except PgToolError as exc:
        raise PgToolError(f"{conn.where}: {exc}") from None


def count_rows(pg: psycopg.Connection) -> tuple[dict[str, int], list[str]]:
    """Exact row count of every dumped table, in the connection's current snapshot."""
    counts: dict[str, int] = {}
    warnings: list[str] = []
    for schema, table in pg.execute(_TABLES_SQL).fetchall():
        name = f"{schema}.{table}"
        try:
            with pg.transaction():
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                counts[name] = pg.execute(query).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            warnings.append(f"no SELECT privilege on {name}: its row count is not recorded")
    return counts, warnings


def snapshot_facts(pg: psycopg.Connection) -> tuple[dict[str, int], list[str], dict]:
    """Row counts and the object inventory, both in the exported snapshot."""
    counts, warnings = count_rows(pg)
    return counts, warnings, take_inventory(pg)


@dataclass
class Snapshot:
    """The open transaction a dump runs in: its connection, server version, tools and exported snapshot."""

    pg: psycopg.Connection
    version: str
    tools: PgTools
    snapshot_id: str
    size_hint: int  # bytes to expect in storage: 1.5 x the database's size


@contextlib.contextmanager
def exported_snapshot(conn: PgConn, pg_bin_dir: str | None, lock_wait_timeout_s: int) -> Iterator[Snapshot]:
    """A REPEATABLE READ, read-only transaction holding the database's share lock, with its snapshot exported
    for pg_dump; rolled back when the block ends (its row counts use the same snapshot, see snapshot_facts)."""
    with conn.connect() as pg:
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        pg.read_only = True
        version = server_version(pg)
        tools = tools_for(conn, int(version.split(".")[0]), pg_bin_dir)
        lock_database(pg, exclusive=False, where=conn.where)
        pg.execute("SET LOCAL row_security = off")  # as pg_dump: an RLS-filtered count would be wrong
        pg.execute(f"SET LOCAL lock_timeout = {int(lock_wait_timeout_s) * 1000}")
        snapshot_id = pg.execute("SELECT pg_export_snapshot()").fetchone()[0]
        size_hint = pg.execute("SELECT pg_database_size(current_database())").fetchone()[0] * 3 // 2
        yield Snapshot(pg, version, tools, snapshot_id, size_hint)
        pg.rollback()


def facts_of(counting, conn: PgConn) -> tuple[dict[str, int], list[str], dict]:
    """The result of a snapshot_facts future, or DumpError (redacted) when counting failed."""
    try:
        return counting.result()
    except psycopg.Error as exc:
        raise DumpError(f"counting rows of {conn.where} failed: {redact_text(str(exc), conn.secrets())}") from None


def write_error(exc: OSError, partial: Path, conn: PgConn, stage_dir: Path) -> DumpError:
    """The DumpError for an archive that could not be written: a full disk names the stage and the fix."""
    if exc.errno == errno.ENOSPC:
        return DumpError(f"disk full while writing {partial} (dump of {conn.where}): "
                         f"free space in {stage_dir} or set stage_dir to a larger disk")
    return DumpError(f"cannot write {partial}: {exc}")


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _pg_dump_error(conn: PgConn, tools: PgTools, returncode: int, stderr: str) -> BackupPipelineError:
    tail = redact_text(stderr.strip(), conn.secrets())[-1500:]
    if "server version mismatch" in tail:
        return PgToolError(f"pg_dump {tools.version} refused {conn.where}: {tail} — install a newer postgresql-client or set pg_bin_dir")
    if "could not obtain lock" in tail or ("statement timeout" in tail and "LOCK TABLE" in tail):
        return DumpError(
            f"pg_dump of {conn.where} could not lock its tables within lock_wait_timeout: a migration or "
            "long transaction holds an exclusive lock (see pg_locks); retry later or raise lock_wait_timeout"
        )
    if returncode < 0:
        return DumpError(
            f"pg_dump of {conn.where} {_describe_exit(returncode)} before finishing; no backup was written "
            f"(check memory limits / the OOM killer, or what stopped it). {tail}".strip()
        )
    return DumpError(f"pg_dump of {conn.where} {_describe_exit(returncode)}: {tail or 'no error output'}")


def dump_database(
    dsn: str,
    stage_dir: Path,
    names: BackupNames,
    *,
    pg_bin_dir: str | None = None,
    level: int = 1,
    threads: int = DEFAULT_THREADS,
    lock_wait_timeout_s: int = 300,
    recipients: Sequence[str] = (),
    storage=None,
    lock=None,
    jobs: int = 1,
) -> DumpResult:
    """Dump the whole database behind `dsn` into stage_dir; returns what the manifest needs.

    With age recipients the archive and roles file are encrypted after compression, before they touch the disk.
    With `storage`, the archive streams into its key there while pg_dump runs (parts uploaded as they fill,
    Object Lock `lock` applied) and only the roles file lands in stage_dir; the object appears only on success.
    With jobs > 1, pg_dump runs `--format=directory --jobs=N` in the same snapshot (core/dump_parallel.py).
    """
    if not isinstance(jobs, int) or not 1 <= jobs <= MAX_DUMP_JOBS:
        raise ConfigError(f"dump_jobs {jobs!r} is out of range: use 1 (one pg_dump stream) to {MAX_DUMP_JOBS} workers")
    if jobs > 1:
        from .dump_parallel import dump_directory

        return dump_directory(dsn, stage_dir, names, pg_bin_dir=pg_bin_dir, level=level, jobs=jobs,
                              lock_wait_timeout_s=lock_wait_timeout_s, recipients=recipients, storage=storage, lock=lock)
    conn = PgConn.parse(dsn)
    conn.check_not_transaction_pooler()
    started_at = datetime.now(UTC)
    stage_dir.mkdir(parents=True, exist_ok=True)
    archive_path = stage_dir / Path(names.archive).name
    partial = archive_path.with_name(archive_path.name + ".partial")

    with exported_snapshot(conn, pg_bin_dir, lock_wait_timeout_s) as snap:
        pg, version, tools, snapshot_id, size_hint = snap.pg, snap.version, snap.tools, snap.snapshot_id, snap.size_hint
        env = conn.subprocess_env()
        sink = storage.open_write(names.archive, size_hint, lock) if storage is not None else _StageFile(partial)
        with tempfile.TemporaryFile() as stderr_file, sink as out:
            proc = subprocess.Popen(
                [tools.path("pg_dump"), "--format=custom", "--compress=0", f"--snapshot={snapshot_id}",
                 "--no-password", f"--lock-wait-timeout={int(lock_wait_timeout_s) * 1000}",
                 f"--dbname={psycopg.conninfo.make_conninfo(dbname=conn.dbname)}"],
                stdout=subprocess.PIPE, stderr=stderr_file, env=env,
            )
            writer = HashingWriter(out)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="row-counts") as pool:
                counting = pool.submit(snapshot_facts, pg)
                try:
                    raw_size = compress_stream(proc.stdout, writer, names.codec, level, threads, recipients)
                    if storage is None:
                        out.flush()
                except BaseException as exc:
                    proc.kill()
                    pg.cancel_safe()
                    proc.wait()
                    partial.unlink(missing_ok=True)
                    if isinstance(exc, OSError):
                        raise write_error(exc, partial, conn, stage_dir) from None
                    raise
                finally:
                    proc.stdout.close()
                returncode = proc.wait()
                if returncode != 0:
                    pg.cancel_safe()
                    partial.unlink(missing_ok=True)
                    stderr_file.seek(0)
                    raise _pg_dump_error(conn, tools, returncode, stderr_file.read().decode(errors="replace"))
                try:
                    row_counts, warnings, inventory = facts_of(counting, conn)
                except DumpError:
                    partial.unlink(missing_ok=True)
                    raise
            archive_uri = out.commit() if storage is not None else None

    if storage is None:
        os.replace(partial, archive_path)
    globals_path, globals_size, globals_sha, globals_warning = dump_roles(conn, tools, stage_dir, names, recipients)
    if globals_warning:
        warnings.append(globals_warning)
    return DumpResult(
        archive_path=archive_path,
        globals_path=globals_path,
        codec=names.codec,
        compression_level=level,
        archive_size=writer.size,
        archive_sha256=writer.sha256.hexdigest(),
        raw_size=raw_size,
        globals_size=globals_size,
        globals_sha256=globals_sha,
        row_counts=row_counts,
        snapshot_id=snapshot_id,
        inventory=inventory,
        server_version=version,
        pg_dump_version=tools.version,
        database=conn.dbname,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        warnings=warnings,
        recipients=tuple(recipients),
        archive_uri=archive_uri,
        archive_key=names.archive,
    )


class _StageFile:
    """The archive's `.partial` file in the stage, fsynced on commit, deleted unless committed."""

    def __init__(self, path: Path):
        self.path = path
        self._out = open(path, "wb")
        self.write = self._out.write

    def flush(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())

    def __enter__(self) -> "_StageFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._out.close()


def dump_roles(conn: PgConn, tools: PgTools, stage_dir: Path, names: BackupNames, recipients: Sequence[str] = ()):
    """Roles (without passwords) beside the archive; pg_dump does not include them."""
    path = stage_dir / Path(names.globals).name
    result = subprocess.run(
        [tools.path("pg_dumpall"), "--roles-only", "--no-role-passwords", "--no-password", "-l", conn.dbname],
        capture_output=True, env=conn.subprocess_env(), timeout=600,
    )
    if result.returncode != 0:
        err = redact_text(result.stderr.decode(errors="replace").strip(), conn.secrets())[-500:]
        return None, 0, None, f"roles were not dumped (pg_dumpall --roles-only failed: {err}); restore with --no-owner"
    stored = encrypt_bytes(result.stdout, recipients) if recipients else result.stdout
    path.write_bytes(stored)
    return path, len(stored), hashlib.sha256(stored).hexdigest(), None


