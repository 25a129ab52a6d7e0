"""A real deployment for tests: dagster-daemon and dagster-webserver processes on deploy/dagster.yaml.

Dagster's storage is a fresh database on the embedded PostgreSQL, initialised with `backup-pipeline
instance init --postgres` before either process starts. Each process runs in its own process group on
127.0.0.1 and is killed with its group (code servers, run workers) by whoever started it.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_graphql import DagsterGraphQLClient

from backup_pipeline.core.ephemeral import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLI = str(BIN / "backup-pipeline")


@dataclass
class Deployment:
    env: dict[str, str]
    home: Path
    url: str = ""
    read_only_url: str = ""

    def cli(self, *args: str, timeout: float = 180, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env={**self.env, **extra_env}, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DAGSTER_POSTGRES_URL")}
        os.environ.update(DAGSTER_HOME=self.env["DAGSTER_HOME"], DAGSTER_POSTGRES_URL=self.env["DAGSTER_POSTGRES_URL"])
        try:
            with dg.DagsterInstance.get() as instance:
                yield instance
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)

    def wait_for_run(self, run_id: str, seconds: float = 120) -> dg.DagsterRun:
        deadline = time.monotonic() + seconds
        with self.instance() as instance:
            while (run := instance.get_run_by_id(run_id)) is None or not run.is_finished:
                assert time.monotonic() < deadline, f"run {run_id} did not finish in {seconds:.0f}s ({run and run.status})"
                time.sleep(1)
        return run


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL what is left after 20 s: nothing the process started survives it."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its group (code servers, run workers) may not be
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def webserver(env: dict[str, str], log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Start dagster-webserver on a free port (`--read-only` among `extra` for the read-only one); no waiting."""
    port = free_port()
    proc = start([str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                  "-p", str(port), *extra], env, log)
    return proc, f"http://127.0.0.1:{port}"


def wait_for_webserver(proc: subprocess.Popen, url: str, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dagster-webserver did not come up: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)


def daemon(env: dict[str, str], log: Path) -> subprocess.Popen:
    return start([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], env, log)


def wait_for_daemon(open_instance: Callable[[], AbstractContextManager[dg.DagsterInstance]], proc: subprocess.Popen,
                    log: Path, seconds: float = 180) -> None:
    """Until the daemon's run queue has heartbeat: from then on the CLI submits its runs to the queue.

    `open_instance`: Deployment.instance, or dg.DagsterInstance.get for $DAGSTER_HOME's.
    """
    from backup_pipeline.dagster_home import daemon_alive

    deadline = time.monotonic() + seconds
    with open_instance() as instance:
        while not daemon_alive(instance):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dagster-daemon did not heartbeat: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def graphql(url: str) -> DagsterGraphQLClient:
    port = int(url.rsplit(":", 1)[1])
    return DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
