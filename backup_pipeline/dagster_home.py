"""The one Dagster instance the CLI, the demo, `make dev` and the migrations gate share.

One default home for all of them: $DAGSTER_HOME, else ~/.backup_pipeline/dagster_home. A home without a
dagster.yaml gets the project's full one (run queue, run monitoring) from package data, so an installed CLI
queues and monitors runs like the deployment does; a dagster.yaml someone wrote is never overwritten.
"""

import os
import time
from importlib.resources import files
from pathlib import Path

from backup_pipeline.core.errors import ConfigError

DEFAULT_HOME = Path.home() / ".backup_pipeline" / "dagster_home"
POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"
PSYCOPG2_SCHEME = "postgresql+psycopg2:"
# What launch.py wrote into new homes before the full file shipped: upgraded in place.
_OLD_MINIMAL_YAML = "telemetry:\n  enabled: false\n"
# The run queue of the files shipped before backup_pipeline/run_queue.py (which tags asset-page runs with
# their target): a home holding such a file unchanged is upgraded in place.
_OUR_COORDINATOR = ("# Dagster's QueuedRunCoordinator, which also tags runs launched from an asset\n"
                    "# page (\"Materialize\" on backups/<target>) with their target.\n"
                    "run_coordinator:\n  module: backup_pipeline.run_queue\n  class: TargetQueuedRunCoordinator\n")
_STOCK_COORDINATOR = "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
# Daemons heartbeat every 30 s; a daemon silent for longer than this is taken for stopped.
DAEMON_HEARTBEAT_TOLERANCE_S = 90.0


def instance_yaml(kind: str = "local") -> str:
    """The shipped dagster.yaml: 'local' (SQLite under the home) or 'postgres' (deploy/dagster.yaml)."""
    return files("backup_pipeline").joinpath(f"dagster_yaml/{kind}.yaml").read_text()


def shipped_before(kind: str = "local") -> str:
    """The shipped dagster.yaml as it was before the run queue tagged asset-page runs."""
    return instance_yaml(kind).replace(_OUR_COORDINATOR, _STOCK_COORDINATOR)


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (set in this process's environment too), created with the full dagster.yaml if it has none.

    A file we shipped earlier, unchanged, is replaced by today's; a file someone edited is left alone.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME)
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    text = config.read_text() if config.exists() else None
    if text is None or text == _OLD_MINIMAL_YAML:
        config.write_text(instance_yaml("local"))
    elif _STOCK_COORDINATOR in text:  # compared in full only then: this runs at every CLI start
        for kind in ("local", "postgres"):
            if text == shipped_before(kind):
                config.write_text(instance_yaml(kind))
    return home


def init_instance(postgres: bool = False, force: bool = False, print_fn=print) -> Path:
    """Write the home's dagster.yaml and create or migrate its storage, once, before a daemon or webserver starts."""
    home = ensure_dagster_home()
    config = home / "dagster.yaml"
    wanted = instance_yaml("postgres" if postgres else "local")
    if (postgres or POSTGRES_URL_ENV in config.read_text()) and not os.environ.get(POSTGRES_URL_ENV):
        raise ConfigError(f"Dagster's storage in PostgreSQL needs {POSTGRES_URL_ENV} set "
                          f"(e.g. postgresql://dagster@db-host:5432/dagster); nothing was written to {config}")
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if (postgres or POSTGRES_URL_ENV in config.read_text()) and not url.startswith(PSYCOPG2_SCHEME):
        raise ConfigError(f"{POSTGRES_URL_ENV} must start with {PSYCOPG2_SCHEME}// (dagster-postgres needs psycopg2; "
                          "SQLAlchemy 2.1 takes psycopg 3 for a plain postgresql:// URL)")
    if config.read_text() != wanted:
        if not force and config.read_text() != instance_yaml("local"):  # someone's own file
            raise ConfigError(f"{config} already exists and differs from the shipped one: "
                              "keep it (drop --postgres) or pass --force to replace it")
        config.write_text(wanted)
    return migrate_storage(print_fn)


def migrate_storage(print_fn=print) -> Path:
    """Create or migrate the home's storage as its dagster.yaml says (what `dagster instance migrate` does)."""
    import dagster as dg

    home = ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        instance.upgrade(print_fn)
    return home


def daemon_alive(instance) -> bool:
    """True if this instance queues runs and a dagster-daemon dequeuing them heartbeat recently."""
    from dagster._core.run_coordinator import QueuedRunCoordinator

    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        return False
    beat = instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR")
    return beat is not None and time.time() - beat.timestamp < DAEMON_HEARTBEAT_TOLERANCE_S
