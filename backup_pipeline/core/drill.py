"""Restore drills: prove a stored backup restores, in a throwaway server.

The drill reads the backup from storage (never the local stage), checks its
sha256, starts a PostgreSQL of a major >= the source's, creates the roles,
restores with parallel pg_restore, compares the result with the manifest and
runs the target's assertions. Extensions the drill server cannot provide
(Supabase's pgsodium, vault, graphql…) are taken out of the restore list and
reported by name. The server is always stopped and deleted.
"""

import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from .archive import decompress_stream
from .backup import download_verified, read_manifest
from .dump import server_version, tools_for
from .ephemeral import EphemeralPostgres
from .errors import BackupPipelineError
from .pgconn import PgConn
from .restore import create_missing_roles
from .storage import Storage
from .verify import AssertionResult, Comparison, compare_with_manifest, run_assertions

# pg_restore is most of a drill's time; past 4 workers the disk, not the CPU, is the limit.
DRILL_JOBS = min(os.cpu_count() or 1, 4)
_TOC_EXTENSION = re.compile(r"^\d+; \d+ \d+ EXTENSION - (\S+)")
_TOC_EXTENSION_COMMENT = re.compile(r"^\d+; \d+ \d+ COMMENT - EXTENSION (\S+)")
_TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")


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
            return f"restored and matched the manifest in {self.restore_seconds:.1f}s{skipped}"
        return "; ".join(self.reasons) or "drill failed"

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
        }


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
    manifest = read_manifest(storage, manifest_key)
    result = DrillResult(backup_id=manifest["backup_id"], target=manifest["target"], manifest_uri=storage.uri(manifest_key))
    stage_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=stage_dir, prefix="drill-") as work:
        archive = Path(work) / "archive"
        plain = Path(work) / "plain.dump"
        try:
            download_verified(storage, manifest, archive)
            with open(archive, "rb") as src, open(plain, "wb") as dst:
                decompress_stream(src, dst, manifest["compression"]["codec"])
        except BackupPipelineError as exc:
            result.reasons.append(str(exc))
            return result
        archive.unlink()
        globals_sql = storage.get_bytes(manifest["globals"]["key"]).decode() if manifest.get("globals") else None
        source_major = int(manifest["server_version"].split(".")[0])
        with EphemeralPostgres(server_major, min_major=None if server_major else source_major) as server:
            _restore_and_check(server, manifest, plain, globals_sql, assertion_files, jobs, result)
    return result


def _restore_and_check(server, manifest, plain: Path, globals_sql, assertion_files, jobs: int, result: DrillResult) -> None:
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
    toc = subprocess.run([tools.path("pg_restore"), "-l", str(plain)], capture_output=True, text=True, env=env)
    if toc.returncode != 0:
        result.reasons.append(f"pg_restore cannot read the archive: {toc.stderr.strip()[-500:]}")
        return
    list_file = plain.with_suffix(".list")
    list_file.write_text(filter_toc(toc.stdout, set(skipped), skipped_tables))
    started = time.monotonic()
    proc = subprocess.run(
        [tools.path("pg_restore"), "--no-password", f"--jobs={max(jobs, 1)}", f"--use-list={list_file}",
         f"--dbname={psycopg.conninfo.make_conninfo(dbname='drill')}", str(plain)],
        capture_output=True, text=True, env=env,
    )
    result.restore_seconds = time.monotonic() - started
    result.restore_errors = restore_errors(proc.stderr)
    result.restorable = proc.returncode == 0 and not result.restore_errors
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
