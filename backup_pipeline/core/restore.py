"""Restoring an archive into a real database, atomically: the tool itself commits.

pg_dump does not carry roles, so the roles file stored beside each archive is
replayed first, for roles the destination lacks only (an existing role is never
altered). Roles are cluster-wide and created before, outside the transaction: a
restore that then fails may leave a created role behind, which is harmless.

The design decision: psql runs WITHOUT --single-transaction, and this process
holds the transaction. It writes BEGIN, the emptying SQL (replace), pg_restore's
script, then a query counting every table in the same session; only when the
counts equal the manifest's does it write COMMIT. psql at end of input never
commits, so if this process dies at any moment before COMMIT (OOM killer, closed
terminal), the server rolls the whole restore back; psql and pg_restore die with
it (PR_SET_PDEATHSIG). The archive is decompressed as a stream straight into
pg_restore's stdin, so no plaintext copy lands on disk. That costs parallel
`pg_restore -j`, which one transaction cannot have anyway (drills keep it).
A directory-format backup (dump_jobs > 1) cannot be piped: its tar is unpacked
(sha256 checked on the same pass, core/fetch.py) into the stage, pg_restore
reads that directory, and it is deleted when the restore ends, however it ends.
"""

import ctypes
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql

from .archive import decompress_stream
from .backup import download_verified, read_globals, read_manifest
from .dump import _TABLES_SQL, server_version, tools_for
from .errors import RestoreError
from .fetch import download_plain, is_directory_format
from .locks import lock_database
from .pgconn import PgConn
from .redact import redact_text
from .storage import Storage

_ROLE_LINE = re.compile(r'^(?:CREATE|ALTER|COMMENT ON) ROLE ("(?:[^"]|"")+"|[^\s;]+)')
_GRANT_LINE = re.compile(r'^GRANT ("(?:[^"]|"")+"|[^\s;]+) TO ("(?:[^"]|"")+"|[^\s;]+)')

_USER_RELATIONS_SQL = """
SELECT n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
ORDER BY 1
"""


@dataclass
class RestoreResult:
    destination: str
    server_version: str
    pg_restore_version: str
    roles_created: list[str]
    duration_seconds: float
    warnings: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)  # counted inside the transaction, before COMMIT


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def role_statements(globals_sql: str, missing: set[str]) -> list[str]:
    """Statements of the roles file that create or describe a role in `missing`."""
    out = []
    for line in globals_sql.splitlines():
        line = line.strip()
        if match := _ROLE_LINE.match(line):
            if _unquote(match.group(1)) in missing:
                out.append(line)
        elif match := _GRANT_LINE.match(line):
            if {_unquote(match.group(1)), _unquote(match.group(2))} & missing:
                out.append(line)
    return out


def roles_in(globals_sql: str) -> set[str]:
    return {_unquote(m.group(1)) for line in globals_sql.splitlines() if (m := re.match(r'^CREATE ROLE ("(?:[^"]|"")+"|[^\s;]+);', line.strip()))}


def create_missing_roles(pg: psycopg.Connection, globals_sql: str) -> tuple[list[str], list[str]]:
    """Create the roles the destination lacks; returns (created, warnings)."""
    existing = {r for (r,) in pg.execute("SELECT rolname FROM pg_roles").fetchall()}
    missing = roles_in(globals_sql) - existing
    warnings = []
    for statement in role_statements(globals_sql, missing):
        try:
            with pg.transaction():
                pg.execute(statement)
        except psycopg.Error as exc:
            warnings.append(f"{statement[:120]}: {str(exc).strip().splitlines()[0]}")
    created = sorted(r for r in missing if pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (r,)).fetchone())
    return created, warnings


def user_relations(pg: psycopg.Connection) -> list[str]:
    return [r for (r,) in pg.execute(_USER_RELATIONS_SQL).fetchall()]


def restore_archive(
    archive: BinaryIO | Path,
    codec: str,
    to_dsn: str,
    *,
    source_major: int,
    dump_tool_major: int,
    globals_sql: str | None = None,
    pg_bin_dir: str | None = None,
    jobs: int = 1,
    replace: bool = False,
    stage_dir: Path | None = None,
    expected_row_counts: dict[str, int] | None = None,
) -> RestoreResult:
    """Restore a compressed custom-format archive (a readable stream), or pg_dump's directory (a Path), into the
    database at to_dsn, in ONE transaction.

    By default the destination must be empty; with replace=True everything it
    holds is dropped first, in the same transaction. The tables of
    expected_row_counts are counted before COMMIT and a difference rolls the
    restore back. On any error, or if this process dies, the destination is left
    as it was (roles created first excepted). `jobs` and `stage_dir` are accepted
    for callers written before: one transaction has one session and needs no file.
    """
    conn = PgConn.parse(to_dsn, what="destination URL")
    started = time.monotonic()
    with conn.connect(autocommit=True) as pg:
        lock_database(pg, exclusive=True, where=conn.where)
        version = server_version(pg)
        major = int(version.split(".")[0])
        if major < source_major:
            raise RestoreError(
                f"{conn.where} runs PostgreSQL {version}, older than the backup's server {source_major}: "
                f"restore into PostgreSQL {source_major} or newer"
            )
        if not replace and (existing := user_relations(pg)):
            raise RestoreError(
                f"{conn.where} is not empty ({len(existing)} relations, e.g. {', '.join(existing[:3])}): "
                "restore into an empty database, or drop these objects first"
            )
        tools = tools_for(conn, max(major, dump_tool_major), pg_bin_dir, purpose="restore into")
        created, warnings = create_missing_roles(pg, globals_sql) if globals_sql else ([], [])
        if globals_sql is None:
            warnings.append("the backup has no roles file: objects owned by roles missing here will fail to restore")
        if jobs > 1:
            warnings.append(f"jobs={jobs} ignored: a restore into a real database runs as one transaction, one session")
        pre_sql = empty_database_sql(pg) if replace else ""
        # The advisory lock above stays held by `pg` until the transaction below has ended.
        counts = _restore_in_one_transaction(tools, conn, archive, codec, pre_sql, major, expected_row_counts)
    return RestoreResult(
        destination=conn.where,
        server_version=version,
        pg_restore_version=tools.version,
        roles_created=created,
        duration_seconds=time.monotonic() - started,
        warnings=warnings,
        row_counts=counts,
    )


def empty_database_sql(pg: psycopg.Connection) -> str:
    """SQL that drops every user object of pg's database (schemas, public's contents, large objects)."""
    ext = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
    rows = pg.execute(
        f"""
        SELECT format('DROP SCHEMA %I CASCADE;', n.nspname) FROM pg_namespace n
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND n.nspname NOT LIKE 'pg\\_%'
          AND {ext.format(oid='n.oid')}
        UNION ALL
        SELECT format('DROP %s IF EXISTS public.%I CASCADE;',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                                     WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.relname)
        FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT c.relispartition AND {ext.format(oid='c.oid')}
        UNION ALL
        SELECT format('DROP ROUTINE IF EXISTS public.%I(%s) CASCADE;', p.proname, pg_get_function_identity_arguments(p.oid))
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND {ext.format(oid='p.oid')}
        UNION ALL
        SELECT format('DROP TYPE IF EXISTS public.%I CASCADE;', t.typname) FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'c', 'd', 'r') AND t.typrelid = 0
          AND {ext.format(oid='t.oid')}
        UNION ALL
        SELECT 'SELECT lo_unlink(oid) FROM pg_largeobject_metadata;' WHERE EXISTS (SELECT 1 FROM pg_largeobject_metadata)
        """
    ).fetchall()
    return "\n".join(r[0] for r in rows) + "\n"


_UNCHANGED = "nothing was changed: the restore ran in one transaction"
_PAUSE_BEFORE_COMMIT_ENV = "BACKUP_PIPELINE_TEST_PAUSE_BEFORE_COMMIT"  # test hook: seconds to sleep before COMMIT
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when this process dies, so no psql can outlive its restore.

    Linux sends it when the forking thread ends; restores wait for their children in that thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class _Feeder(threading.Thread):
    """Decompresses the archive into pg_restore's stdin; keeps what went wrong for the main thread."""

    def __init__(self, archive: BinaryIO, sink: BinaryIO, codec: str):
        super().__init__(daemon=True)
        self.archive, self.sink, self.codec = archive, sink, codec
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            decompress_stream(self.archive, self.sink, self.codec)
        except BrokenPipeError:
            pass  # pg_restore stopped early; its exit code and stderr say why
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            self.error = exc
        finally:
            try:
                self.sink.close()
            except BrokenPipeError:
                pass


class _NoFeed:
    """The feeder of a directory-format restore: pg_restore reads the directory itself."""

    error: BaseException | None = None

    def start(self) -> None:
        pass

    def join(self) -> None:
        pass


class _Markers(threading.Thread):
    """Reads psql's stdout so it never blocks on a full pipe, keeping only the lines this restore asked for."""

    def __init__(self, stream: BinaryIO, prefix: bytes):
        super().__init__(daemon=True)
        self.stream, self.prefix, self.lines = stream, prefix, queue.Queue()

    def run(self) -> None:
        try:
            for line in self.stream:
                if line.startswith(self.prefix):
                    self.lines.put(line[len(self.prefix):].rstrip(b"\n"))
        finally:
            self.lines.put(None)

    def next(self) -> bytes | None:
        """The next marker line (after its prefix), or None once psql has exited."""
        return self.lines.get()


def _tables_sql(prefix: str) -> bytes:
    """A query printing `<prefix>tables [...]`: one `SELECT name, count(*)` per table the dump counts, quoted by the server."""
    per_table = "pg_catalog.format('SELECT %L AS t, count(*) AS n FROM %I.%I', t.nspname || '.' || t.relname, t.nspname, t.relname)"
    return (f"SET row_security = off;\nSELECT '{prefix}tables ' || coalesce(pg_catalog.jsonb_agg({per_table})::text, '[]')\n"
            f"FROM ({_TABLES_SQL}) t;\n").encode()


def _counts_sql(prefix: str, per_table: list[str]) -> bytes:
    """One query printing `<prefix>counts {"schema.table": n, ...}`; jsonb's text never spans lines."""
    if not per_table:
        return f"SELECT '{prefix}counts {{}}';\n".encode()
    union = "\nUNION ALL ".join(per_table)
    return f"SELECT '{prefix}counts ' || coalesce(pg_catalog.jsonb_object_agg(c.t, c.n)::text, '{{}}') FROM (\n{union}\n) c;\n".encode()


_HEADER = (b"SET ", b"SELECT pg_catalog.set_config", b"--", b"\\")
_TAIL = 64 * 1024  # far more than what follows pg_restore's final COMMIT (a comment and \unrestrict)
_SCRIPT_COMMIT = b"\nCOMMIT;\n"
_RELAY = 64 * 1024  # a pipe's size: pg_restore and psql keep running side by side


def _copy_script(src: BinaryIO, dst: BinaryIO, skip_timeout: bool) -> bool:
    """Copy `pg_restore --single-transaction -f -`'s script to psql without its BEGIN and its COMMIT.

    --single-transaction keeps pg_restore from writing BEGIN/COMMIT around large
    objects mid-script, and puts one BEGIN after its header and one COMMIT at
    its end instead: this process holds the transaction, so the header is read
    line by line to drop that BEGIN (and pg_restore 17's `SET transaction_timeout`,
    which servers <= 16 reject), the rest is copied in chunks, and the last 64 KiB
    are held back to drop the final COMMIT. Returns False (the tail unsent) when there is no such COMMIT.
    """
    for line in src:
        if skip_timeout and line.startswith(b"SET transaction_timeout"):
            continue
        if line == b"BEGIN;\n":
            break
        dst.write(line)
        if line.strip() and not line.startswith(_HEADER):
            break
    held = b""
    while chunk := src.read1(_RELAY):
        held += chunk
        if len(held) > 2 * _TAIL:
            dst.write(held[:-_TAIL])
            held = held[-_TAIL:]
    cut = held.rfind(_SCRIPT_COMMIT)
    after = held[cut + len(_SCRIPT_COMMIT):] if cut >= 0 else b""
    if cut < 0 or any(line.strip() and not line.startswith((b"--", b"\\")) for line in after.splitlines()):
        return False
    dst.write(held[:cut + 1] + after)
    return True


def _restore_in_one_transaction(tools, conn: PgConn, archive: BinaryIO | Path, codec: str, pre_sql: str, server_major: int,
                                expected: dict[str, int] | None) -> dict[str, int]:
    """BEGIN, pre_sql, pg_restore's script, count, compare, COMMIT: see the module docstring. Returns the counts."""
    prefix = f"bp-{secrets.token_hex(8)}-"
    env = conn.subprocess_env()
    env.setdefault("PGAPPNAME", "backup_pipeline restore")
    dbname = f"--dbname={psycopg.conninfo.make_conninfo(dbname=conn.dbname)}"
    with tempfile.TemporaryFile() as err:
        psql = subprocess.Popen(
            [tools.path("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--no-password", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, preexec_fn=_die_with_parent(),
        )
        directory = isinstance(archive, Path)
        script = subprocess.Popen([tools.path("pg_restore"), "--single-transaction", "-f", "-",
                                   *([str(archive)] if directory else [])],
                                  stdin=subprocess.DEVNULL if directory else subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=err, env=env, preexec_fn=_die_with_parent())
        feeder = _NoFeed() if directory else _Feeder(archive, script.stdin, codec)
        markers = _Markers(psql.stdout, prefix.encode())
        feeder.start()
        markers.start()
        counts: dict[str, int] | None = None
        commit_sent = committed = whole = False
        try:
            psql.stdin.write(b"BEGIN;\n" + pre_sql.encode())
            whole = _copy_script(script.stdout, psql.stdin, server_major < 17 <= tools.major)
            script.wait()
            feeder.join()
            if whole and script.returncode == 0 and feeder.error is None:
                psql.stdin.write(_tables_sql(prefix))
                psql.stdin.flush()
                if (line := markers.next()) is not None:
                    psql.stdin.write(_counts_sql(prefix, json.loads(line.removeprefix(b"tables "))))
                    psql.stdin.flush()
                    if (line := markers.next()) is not None:
                        counts = json.loads(line.removeprefix(b"counts "))
            mismatches = compare_counts(expected, counts) if counts is not None and expected else {}
            if mismatches:
                psql.stdin.write(b"ROLLBACK;\n")
                raise RestoreError(
                    f"restored row counts differ from the manifest in {conn.where}: "
                    + ", ".join(f"{t}: expected {e}, got {a}" for t, (e, a) in list(mismatches.items())[:10])
                    + f"; the restore was rolled back, so {_UNCHANGED}: drill this backup or restore another one"
                )
            if counts is not None:
                if pause := os.environ.get(_PAUSE_BEFORE_COMMIT_ENV):
                    print(f"backup_pipeline: pausing {pause}s before COMMIT", file=sys.stderr, flush=True)
                    time.sleep(float(pause))
                commit_sent = True
                psql.stdin.write(f"COMMIT;\nSELECT '{prefix}committed';\n".encode())
                psql.stdin.flush()
                committed = markers.next() == b"committed"
        except BrokenPipeError:
            pass  # psql stopped at the first error; its exit code and stderr say why
        finally:
            # psql's input ending without COMMIT ends its session, and the server rolls the restore back.
            for pipe in (psql.stdin, script.stdout):
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
            psql.wait()
            if script.poll() is None:
                script.kill()
            script.wait()
            feeder.join()
            markers.join()
        if committed:
            return counts
        if commit_sent and psql.returncode == 0:
            raise RestoreError(
                f"psql ended without confirming the COMMIT into {conn.where}: check whether it holds the backup's "
                "tables and row counts, and restore again if not"
            )
        if feeder.error is not None:
            raise feeder.error
        err.seek(0)
        tail = redact_text(err.read().decode(errors="replace").strip(), conn.secrets())[-1500:]
        if not whole and script.returncode == 0 and psql.poll() == 0:
            raise RestoreError(f"pg_restore {tools.version}'s script for {conn.where} does not end with its COMMIT, "
                               f"so {_UNCHANGED}: set pg_bin_dir to a PostgreSQL release this version was tested with")
        raise RestoreError(f"pg_restore into {conn.where} failed ({_UNCHANGED}): {tail or 'psql ended early'}")


def create_database(admin_dsn: str, name: str) -> str:
    """CREATE DATABASE name on the server of admin_dsn; returns a DSN for it."""
    conn = PgConn.parse(admin_dsn)
    with conn.connect(autocommit=True) as pg:
        pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conn.with_dbname(name).dsn




@dataclass
class RestoredBackup:
    """A restore from storage whose row counts matched the manifest before COMMIT (so mismatches stays empty)."""

    backup_id: str
    manifest: dict
    result: RestoreResult
    row_counts: dict[str, int]
    mismatches: dict[str, tuple[int | None, int | None]]

    def check_counts(self, where: str) -> None:
        """Raise RestoreError naming the tables whose restored row counts differ from the manifest."""
        if self.mismatches:
            raise RestoreError(
                f"restored row counts differ from the manifest in {where}: "
                + ", ".join(f"{t}: expected {e}, got {a}" for t, (e, a) in list(self.mismatches.items())[:10])
            )


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> dict[str, tuple[int | None, int | None]]:
    """Tables of expected whose count differs (None: missing). Tables the manifest lacks are not judged:
    the dump could not count them (no SELECT privilege), or they are extension members it does not dump."""
    return {n: (expected[n], actual.get(n)) for n in sorted(expected) if expected[n] != actual.get(n)}


def restore_from_storage(
    storage: Storage,
    manifest_key: str,
    to_dsn: str,
    *,
    stage_dir: Path,
    pg_bin_dir: str | None = None,
    jobs: int = 1,
    replace: bool = False,
) -> RestoredBackup:
    """Download a backup (checking its sha256 first) and restore it; COMMIT only if its row counts match the manifest."""
    manifest = read_manifest(storage, manifest_key)
    stage_dir.mkdir(parents=True, exist_ok=True)
    local = stage_dir / Path(manifest["archive"]["key"]).name
    if is_directory_format(manifest):
        return _restore_directory(storage, manifest, local.with_suffix(".d"), to_dsn, pg_bin_dir=pg_bin_dir,
                                  replace=replace)
    try:
        download_verified(storage, manifest, local)
        globals_sql = read_globals(storage, manifest)
        with open(local, "rb") as f:
            local.unlink()  # read through the open file: a killed restore leaves no archive behind
            result = restore_archive(
                f,
                manifest["compression"]["codec"],
                to_dsn,
                source_major=int(manifest["server_version"].split(".")[0]),
                dump_tool_major=int(manifest["pg_dump_version"].split(".")[0]),
                globals_sql=globals_sql,
                pg_bin_dir=pg_bin_dir,
                jobs=jobs,
                replace=replace,
                stage_dir=stage_dir,
                expected_row_counts=manifest.get("row_counts", {}),
            )
    finally:
        local.unlink(missing_ok=True)
    result.warnings.extend(getattr(storage, "notes", []))  # which second copy was read, if the primary failed
    return RestoredBackup(backup_id=manifest["backup_id"], manifest=manifest, result=result,
                          row_counts=result.row_counts, mismatches={})


def _restore_directory(storage: Storage, manifest: dict, local: Path, to_dsn: str, *, pg_bin_dir: str | None,
                       replace: bool) -> RestoredBackup:
    """restore_from_storage for a directory-format backup: unpack (checked) into local, restore, delete local."""
    try:
        download_plain(storage, manifest, local)
        globals_sql = read_globals(storage, manifest)
        result = restore_archive(
            local, "directory", to_dsn,
            source_major=int(manifest["server_version"].split(".")[0]),
            dump_tool_major=int(manifest["pg_dump_version"].split(".")[0]),
            globals_sql=globals_sql, pg_bin_dir=pg_bin_dir, replace=replace,
            expected_row_counts=manifest.get("row_counts", {}),
        )
    finally:
        shutil.rmtree(local, ignore_errors=True)
    result.warnings.extend(getattr(storage, "notes", []))
    return RestoredBackup(backup_id=manifest["backup_id"], manifest=manifest, result=result,
                          row_counts=result.row_counts, mismatches={})
