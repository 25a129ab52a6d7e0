"""Where a restore may write, and the confirmation a protected database needs.

A destination is a configured target marked `restore_destination` (dev,
verify) or `protected` (prod: needs confirm=<its name>), or a bare DSN. A DSN
that points at a protected target's database is treated as that target, so
the confirmation cannot be sidestepped by pasting the URL.
"""

import os
import re
from dataclasses import dataclass, field

from .config import Settings, Target
from .errors import ConfigError
from .pgconn import PgConn


@dataclass(frozen=True)
class Destination:
    name: str  # target name, or restore-<dbname> for a bare DSN
    dsn: str = field(repr=False)
    protected: bool
    target: Target | None

    @property
    def where(self) -> str:
        return PgConn.parse(self.dsn).where


def _same_database(a: PgConn, b: PgConn) -> bool:
    return (a.host, a.port, a.dbname) == (b.host, b.port, b.dbname)


def resolve_destination(
    settings: Settings, *, to_target: str | None, to_dsn_env: str | None, confirm: str | None
) -> Destination:
    """The destination, after checking it may be written to; raises before anything is touched."""
    if bool(to_target) == bool(to_dsn_env):
        raise ConfigError("choose exactly one destination: a target (to_target / --to) or a URL (to_dsn_env / --to-dsn)")
    if to_target:
        target = settings.target(to_target)
        if not (target.restore_destination or target.protected):
            raise ConfigError(
                f"target {to_target!r} is not a restore destination: mark it restore_destination: true "
                "(dev/verify) or protected: true (restoring needs confirm) in the targets file"
            )
        destination = Destination(to_target, target.dsn(), target.protected, target)
    else:
        dsn = os.environ.get(to_dsn_env or "")
        if not dsn:
            raise ConfigError(f"environment variable {to_dsn_env} (destination URL) is not set")
        conn = PgConn.parse(dsn, what="destination URL")
        destination = Destination(f"restore-{re.sub(r'[^A-Za-z0-9_-]', '-', conn.dbname)}"[:63], dsn, False, None)
        for target in settings.targets.values():
            if target.protected and os.environ.get(target.dsn_env):
                if _same_database(conn, PgConn.parse(target.dsn())):
                    destination = Destination(target.name, dsn, True, target)
    if destination.protected and confirm != destination.name:
        raise ConfigError(
            f"{destination.name} is a protected target: restoring into it replaces its data; "
            f"set confirm to {destination.name!r} to proceed (nothing was changed)"
        )
    return destination
