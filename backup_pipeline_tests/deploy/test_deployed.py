"""The production path end to end: real dagster-daemon and dagster-webserver on deploy/dagster.yaml.

One deployment (PostgreSQL storage on the embedded server, a daemon, a webserver) serves the module;
the CLI is run as a user runs it, as a subprocess. Shown: the migrations gate through the daemon's
sensor, a GraphQL-launched backup carrying its target tag, the asset page's Materialize (tagged by the
run queue), failing CLI backups (queued, and run in
the CLI's own process) reaching the webhook, and a read-only webserver refusing a launch.
"""

import json
import os
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest
from dagster_graphql import DagsterGraphQLClientError

from backup_pipeline.core.alerts import ALERT_ENV_VARS
from backup_pipeline.core.ephemeral import free_port
from backup_pipeline.resources import TARGET_TAG
from backup_pipeline_tests.deploy.deployment import (
    Deployment, daemon, graphql, stop, wait_for_daemon, wait_for_webserver, webserver,
)
from backup_pipeline_tests.fix_alerts import WEBHOOK_PATH, HttpSink, _HttpHandler
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD, new_database, sample_sql

pytestmark = pytest.mark.slow
CLI_SECRET = "Cli-Only-S3cret-pw"


@pytest.fixture(scope="module")
def sink():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpHandler)
    server.daemon_threads = True
    server.sink = HttpSink(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.sink
    server.shutdown()
    server.server_close()


def _url(conninfo: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    return (f"postgresql+psycopg2://{params['user']}:{quote(params['password'], safe='')}@{params['host']}:{params['port']}"
            f"/{params['dbname']}")


@pytest.fixture(scope="module")
def deployment(pg_server, sink, tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    source = new_database(pg_server.dsn())
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(sample_sql())
    (root / "targets.yaml").write_text(
        f"storage: file://{root / 'storage'}\ntargets:\n"
        '  shop: {"dsn_env": "SHOP_URL", "drill": false}\n'
        '  broken: {"dsn_env": "BROKEN_URL", "drill": false}\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ALERT_ENV_VARS and not k.startswith("AWS_")}
    env.update(
        DAGSTER_HOME=str(root / "dagster_home"),
        DAGSTER_POSTGRES_URL=_url(new_database(pg_server.dsn(), "dagster")),
        BACKUP_TARGETS_FILE=str(root / "targets.yaml"),
        BACKUP_HISTORY_URL=f"sqlite:///{root / 'history.sqlite'}",
        BACKUP_STAGE_DIR=str(root / "stage"),
        SHOP_URL=source,
        BROKEN_URL=f"postgresql://postgres:{quote(SOURCE_PASSWORD)}@127.0.0.1:{free_port()}/shop",
        BACKUP_ALERT_WEBHOOK_URL=sink.url(WEBHOOK_PATH),
    )
    deployment = Deployment(env, root / "dagster_home")
    init = deployment.cli("instance", "init", "--postgres")
    assert init.returncode == 0, init.stderr
    assert (deployment.home / "dagster.yaml").read_text() == (Path(__file__).parents[2] / "deploy/dagster.yaml").read_text()
    procs = []
    try:  # all three start at once: each loads the code location in its own code server
        procs.append(daemon(env, root / "daemon.log"))
        server, deployment.url = webserver(env, root / "webserver.log")
        procs.append(server)
        read_only, deployment.read_only_url = webserver(env, root / "read_only.log", "--read-only")
        procs.append(read_only)
        wait_for_webserver(server, deployment.url, root / "webserver.log")
        wait_for_webserver(read_only, deployment.read_only_url, root / "read_only.log")
        wait_for_daemon(deployment.instance, procs[0], root / "daemon.log")
        yield deployment
    finally:
        for proc in procs:
            stop(proc)


def _alerts_for(sink: HttpSink, run_id: str, seconds: float = 90) -> list[dict]:
    deadline = time.monotonic() + seconds
    while not (bodies := [b for b in sink.bodies(WEBHOOK_PATH) if b and b.get("run_id") == run_id]):
        assert time.monotonic() < deadline, f"no alert for run {run_id} within {seconds:.0f}s: {sink.bodies(WEBHOOK_PATH)}"
        time.sleep(1)
    return bodies


def test_migration_gate_passes_through_the_daemons_sensor(deployment):
    gate = deployment.cli("migration-event", "--target", "shop", "--migration", "0042_add_index",
                          "--wait", "--timeout", "150s", "--json")
    assert gate.returncode == 0, gate.stderr
    event = json.loads(gate.stdout)
    assert event["ok"] and event["backup_id"]
    with deployment.instance() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={"backup_pipeline/migration_event": event["id"]}))
    assert run.tags[TARGET_TAG] == "shop" and run.status.value == "SUCCESS"


def test_a_backup_launched_through_graphql_runs_with_its_target_tag(deployment):
    run_id = graphql(deployment.url).submit_job_execution(
        "backup", run_config={"ops": {"dump": {"config": {"target": "shop", "type": "manual"}}}},
        tags={TARGET_TAG: "shop"},
    )
    run = deployment.wait_for_run(run_id)
    assert run.status.value == "SUCCESS" and run.tags[TARGET_TAG] == "shop"
    listed = json.loads(deployment.cli("list", "--target", "shop", "--json").stdout)
    assert any(r["dagster_run_id"] == run_id and r["status"] == "completed" for r in listed)


MATERIALIZE = """
mutation Materialize($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def test_materialize_on_the_asset_page_runs_a_backup_the_queue_holds_to_its_target(deployment):
    # What the asset page's Materialize button sends: the implicit asset job, the asset, no config, no tags.
    params = {"selector": {"repositoryLocationName": "backup_pipeline", "repositoryName": "__repository__",
                           "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": ["backups", "shop"]}],
                           "assetCheckSelection": []},
              "runConfigData": {}, "mode": "default", "executionMetadata": {"tags": []}}
    launched = graphql(deployment.url)._execute(MATERIALIZE, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = deployment.wait_for_run(launched["run"]["runId"])
    assert run.status.value == "SUCCESS" and run.tags[TARGET_TAG] == "shop"  # the tag the queue added
    listed = json.loads(deployment.cli("list", "--target", "shop", "--json").stdout)
    assert any(r["dagster_run_id"] == run.run_id and r["status"] == "completed" for r in listed)


def test_a_failing_cli_backup_is_queued_run_by_the_daemon_and_alerted(deployment, sink):
    failed = deployment.cli("backup", "--target", "broken", "--json")
    assert failed.returncode == 1 and failed.stderr.startswith("error: ")
    assert "no dagster-daemon" not in failed.stderr  # it went through the queue
    run_id = json.loads(failed.stdout)["dagster_run_id"]
    with deployment.instance() as instance:
        run = instance.get_run_by_id(run_id)
        queued = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
    assert run.tags[TARGET_TAG] == "broken" and run.remote_job_origin.location_name == "backup_pipeline" and queued
    [alert] = _alerts_for(sink, run_id)
    assert (alert["kind"], alert["target"], alert["job"]) == ("run_failed", "broken", "backup")


def test_a_failing_cli_backup_run_in_the_cli_process_is_alerted_too(deployment, sink):
    # --dsn keeps the run in the CLI's process (the secret never reaches the daemon): the sensor still sees it.
    dsn = f"postgresql://postgres:{CLI_SECRET}@127.0.0.1:{free_port()}/shop"
    failed = deployment.cli("backup", "--target", "broken", "--dsn", dsn, "--json")
    assert failed.returncode == 1 and CLI_SECRET not in failed.stderr + failed.stdout
    run_id = json.loads(failed.stdout)["dagster_run_id"]
    with deployment.instance() as instance:
        queued = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
    assert not queued
    [alert] = _alerts_for(sink, run_id)
    assert alert["target"] == "broken" and CLI_SECRET not in json.dumps(alert)


def test_a_read_only_webserver_refuses_to_launch(deployment):
    with deployment.instance() as instance:
        before = len(instance.get_run_ids())
    with pytest.raises(DagsterGraphQLClientError) as refused:
        graphql(deployment.read_only_url).submit_job_execution(
            "backup", run_config={"ops": {"dump": {"config": {"target": "shop"}}}}, tags={TARGET_TAG: "shop"})
    assert "permission" in str(refused.value).lower() or "unauthorized" in str(refused.value).lower()
    with deployment.instance() as instance:
        assert len(instance.get_run_ids()) == before  # no run was created
