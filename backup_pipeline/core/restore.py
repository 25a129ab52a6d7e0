"""Restoring an archive into a database: roles first, then pg_restore.

pg_dump does not carry roles, so the roles file stored beside each archive is
replayed first, but only for roles the destination lacks: an existing role is
never altered. The archive is decompressed as a stream straight into
pg_restore's stdin (one job), or into a temporary file when parallel jobs are
asked for, since `pg_restore -j` needs a seekable file.
"""

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql

from .archive import decompress_stream
from .backup import download_verified, read_manifest
from .dump import count_rows, server_version, tools_for
from .errors import RestoreError
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
    archive: BinaryIO,
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
) -> RestoreResult:
    """Restore a compressed custom-format archive (a readable stream) into the database at to_dsn.

    By default the destination must be empty. With replace=True everything the
    destination holds is dropped and the archive restored in ONE transaction
    (see `_replace`): on any error nothing in the destination changes.
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

        args = [tools.path("pg_restore"), "--no-password", "--exit-on-error",
                f"--dbname={psycopg.conninfo.make_conninfo(dbname=conn.dbname)}"]
        env = conn.subprocess_env()
        if replace:
            result, stderr = _replace(tools, env, conn, archive, codec, empty_database_sql(pg), major, stage_dir)
        elif jobs > 1:
            with tempfile.NamedTemporaryFile(dir=stage_dir, suffix=".dump") as plain:
                decompress_stream(archive, plain, codec)
                plain.flush()
                result = subprocess.run(args + [f"--jobs={jobs}", plain.name], capture_output=True, env=env)
                stderr = result.stderr
        else:
            result, stderr = _restore_from_stream(args, env, archive, codec)
    if result.returncode != 0:
        tail = redact_text(stderr.decode(errors="replace").strip(), conn.secrets())[-1500:]
        unchanged = " (nothing was changed: the restore ran in one transaction)" if replace else ""
        raise RestoreError(f"pg_restore into {conn.where} failed{unchanged}: {tail}")
    return RestoreResult(
        destination=conn.where,
        server_version=version,
        pg_restore_version=tools.version,
        roles_created=created,
        duration_seconds=time.monotonic() - started,
        warnings=warnings,
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


def _replace(tools, env: dict, conn: PgConn, archive: BinaryIO, codec: str, pre_sql: str, server_major: int,
             stage_dir: Path | None):
    """Empty the database and restore the archive as one psql transaction.

    pg_restore's own --clean cannot drop partitioned tables' inherited
    constraints, and its --single-transaction cannot include the emptying, so
    pg_restore writes a script that psql runs after the DROPs, all in one
    transaction with ON_ERROR_STOP. pg_restore >= 17 writes
    `SET transaction_timeout`, which servers <= 16 reject, so that line is
    dropped for them.
    """
    skip_timeout = server_major < 17 <= tools.major
    with tempfile.NamedTemporaryFile(dir=stage_dir, suffix=".dump") as plain, tempfile.TemporaryFile() as err:
        decompress_stream(archive, plain, codec)
        plain.flush()
        psql = subprocess.Popen(
            [tools.path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
             f"--dbname={psycopg.conninfo.make_conninfo(dbname=conn.dbname)}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env,
        )
        script = subprocess.Popen([tools.path("pg_restore"), "-f", "-", plain.name], stdout=subprocess.PIPE,
                                  stderr=err, env=env)
        try:
            psql.stdin.write(pre_sql.encode())
            for line in script.stdout:
                if not (skip_timeout and line.startswith(b"SET transaction_timeout")):
                    psql.stdin.write(line)
        except BrokenPipeError:
            pass  # psql stopped at the first error; its exit code and stderr say why
        finally:
            script.stdout.close()
            script.wait()
            try:
                psql.stdin.close()
            except BrokenPipeError:
                pass
            psql.wait()
        err.seek(0)
        stderr = err.read()
    failed = psql if psql.returncode != 0 else script
    return failed, stderr


def _restore_from_stream(args: list[str], env: dict, archive: BinaryIO, codec: str):
    with tempfile.TemporaryFile() as stderr_file:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=stderr_file, env=env)
        try:
            decompress_stream(archive, proc.stdin, codec)
        except BrokenPipeError:
            pass  # pg_restore stopped early; its exit code and stderr say why
        except BaseException:
            proc.kill()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.wait()
        stderr_file.seek(0)
        return proc, stderr_file.read()


def create_database(admin_dsn: str, name: str) -> str:
    """CREATE DATABASE name on the server of admin_dsn; returns a DSN for it."""
    conn = PgConn.parse(admin_dsn)
    with conn.connect(autocommit=True) as pg:
        pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conn.with_dbname(name).dsn




@dataclass
class RestoredBackup:
    """A restore from storage, with the restored row counts compared to the manifest."""

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
    names = set(expected) | set(actual)
    return {n: (expected.get(n), actual.get(n)) for n in sorted(names) if expected.get(n) != actual.get(n)}


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
    """Download a backup (checking its sha256 first), restore it, and count the restored rows."""
    manifest = read_manifest(storage, manifest_key)
    stage_dir.mkdir(parents=True, exist_ok=True)
    local = stage_dir / Path(manifest["archive"]["key"]).name
    try:
        download_verified(storage, manifest, local)
        globals_sql = None
        if manifest.get("globals"):
            globals_sql = storage.get_bytes(manifest["globals"]["key"]).decode()
        with open(local, "rb") as f:
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
            )
    finally:
        local.unlink(missing_ok=True)
    with PgConn.parse(to_dsn, what="destination URL").connect() as pg:
        pg.execute("SET row_security = off")
        counts, _warnings = count_rows(pg)
    return RestoredBackup(
        backup_id=manifest["backup_id"],
        manifest=manifest,
        result=result,
        row_counts=counts,
        # Tables the backup does not know (only possible with replace) are the destination's own business.
        mismatches=compare_counts(manifest.get("row_counts", {}), {t: n for t, n in counts.items()
                                                                     if not replace or t in manifest.get("row_counts", {})}),
    )
