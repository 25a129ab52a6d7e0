"""Does a deployed run cost about what a CLI run costs? The same backup three ways, same database.

    .venv/bin/python benchmarks/deployed_speed.py --runs 3

All on 127.0.0.1: a throwaway PostgreSQL holds the sample shop database and Dagster's own storage
(deploy/dagster.yaml, dagster-postgres), initialised with `backup-pipeline instance init --postgres`.
Timed, wall clock from the caller's side:

- (a) `backup-pipeline backup --target shop` with no daemon: the run executes in the CLI's process;
- (b) the same command with dagster-daemon running: the CLI queues the run and waits for the daemon;
- (c) the backup launched through dagster-webserver's GraphQL API, from submit until the run succeeds.

Target: (b) - (a) <= 10 s and (c) - (a) <= 10 s (medians). The difference is the queue's dequeue
interval (5 s) plus the run worker's start-up in the code server; the dump itself is the same.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
import psycopg  # noqa: E402

from backup_pipeline.core.ephemeral import EphemeralPostgres, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_S = 10.0


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(20)
            os.killpg(proc.pid, signal.SIGKILL)  # what the leader left in its group
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
        return


def cli_backup(env: dict[str, str], expect_queued: bool) -> float:
    started = time.monotonic()
    proc = bc.run_checked([str(BIN / "backup-pipeline"), "backup", "--target", "shop"], "CLI backup", env=env, cwd=ROOT)
    seconds = time.monotonic() - started
    if expect_queued == ("no dagster-daemon" in proc.stderr):
        raise bc.MeasurementError(f"expected the run {'queued' if expect_queued else 'in process'}: {proc.stderr}")
    return seconds


def graphql_backup(url: str, env: dict[str, str]) -> float:
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(url.rsplit(":", 1)[1]), timeout=30)
    started = time.monotonic()
    run_id = client.submit_job_execution(
        "backup", run_config={"ops": {"dump": {"config": {"target": "shop", "type": "manual"}}}},
        tags={"backup_pipeline/target": "shop"},
    )
    while True:
        try:
            status = client.get_run_status(run_id).value
        except DagsterGraphQLClientError:
            status = "STARTING"
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(0.25)
    if status != "SUCCESS":
        raise bc.MeasurementError(f"GraphQL-launched run {run_id} ended {status}")
    return time.monotonic() - started


def wait_until(what: str, check, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise bc.MeasurementError(f"{what} did not come up in {seconds:.0f}s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="deployed_speed_") as tmp, EphemeralPostgres(password="bench-pw") as server:
        work = Path(tmp)
        source = server.create_database("shop")
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute((ROOT / "backup_pipeline/demo/sample.sql").read_text())
        server.create_database("dagster")
        (work / "targets.yaml").write_text(f"storage: file://{work / 'storage'}\ntargets:\n"
                                           '  shop: {"dsn_env": "SHOP_URL", "drill": false}\n')
        env = {**bc.clean_env(), "DAGSTER_HOME": str(work / "home"), "SHOP_URL": source,
               "DAGSTER_POSTGRES_URL": f"postgresql+psycopg2://postgres:{quote(server.password, safe='')}"
                                       f"@127.0.0.1:{server.port}/dagster",
               "BACKUP_TARGETS_FILE": str(work / "targets.yaml"),
               "BACKUP_HISTORY_URL": f"sqlite:///{work / 'history.sqlite'}", "BACKUP_STAGE_DIR": str(work / "stage")}
        bc.run_checked([str(BIN / "backup-pipeline"), "instance", "init", "--postgres"], "instance init", env=env, cwd=ROOT)
        bc.log(f"(a) CLI backup, no daemon, {args.runs} runs")
        in_process = [cli_backup(env, expect_queued=False) for _ in range(args.runs)]
        port = free_port()
        procs = [start([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], env, work / "daemon.log"),
                 start([str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                        "-p", str(port)], env, work / "webserver.log")]
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until("dagster-webserver", lambda: _answers(url + "/server_info"))
            os.environ.update(DAGSTER_HOME=env["DAGSTER_HOME"], DAGSTER_POSTGRES_URL=env["DAGSTER_POSTGRES_URL"])
            import dagster as dg

            from backup_pipeline.dagster_home import daemon_alive

            with dg.DagsterInstance.get() as instance:
                wait_until("dagster-daemon", lambda: daemon_alive(instance))
            bc.log(f"(b) CLI backup through the daemon's queue, {args.runs} runs")
            queued = [cli_backup(env, expect_queued=True) for _ in range(args.runs)]
            bc.log(f"(c) GraphQL-launched backup, {args.runs} runs")
            launched = [graphql_backup(url, env) for _ in range(args.runs)]
        finally:
            for proc in procs:
                stop(proc)
    a, b, c = (statistics.median(x) for x in (in_process, queued, launched))
    rows = [
        ("(a) CLI backup, in process (median)", bc.fmt_seconds(a), "", ""),
        ("(b) CLI backup via daemon queue (median)", bc.fmt_seconds(b), f"(b)-(a) <= {TARGET_S:.0f} s",
         bc.verdict(b - a <= TARGET_S)),
        ("(c) GraphQL launch via daemon (median)", bc.fmt_seconds(c), f"(c)-(a) <= {TARGET_S:.0f} s",
         bc.verdict(c - a <= TARGET_S)),
    ]
    bc.print_table({"runs": str(args.runs), "all runs (s)": f"a={_list(in_process)} b={_list(queued)} c={_list(launched)}",
                    "machine": bc.machine_info(load_before, os.getloadavg()[0])}, rows)
    return 0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _list(values: list[float]) -> str:
    return ",".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
