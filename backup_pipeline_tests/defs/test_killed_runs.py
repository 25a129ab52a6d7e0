"""Runs killed -9 for real: the next run (or `list`) resolves their rows and deletes what they left on disk."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import pytest

from backup_pipeline.cli import main
from backup_pipeline.core.liveness import PAUSE_ENV
from backup_pipeline.definitions import defs
from backup_pipeline_tests.core.test_recovery import _killed_local_upload
from backup_pipeline_tests.fix_pg import new_database

CLI = os.path.join(os.path.dirname(sys.executable), "backup-pipeline")


@pytest.fixture(scope="module")
def big_dsn(pg_server):
    """2M rows: pg_dump runs for seconds, long enough to be killed half-way."""
    dsn = new_database(pg_server.dsn(), "bp_big")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000000) g")
    return dsn


@pytest.fixture
def env(backup_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return backup_env


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _start_backup(dsn: str, storage_url: str, **extra_env: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=dsn, BACKUP_STORAGE_URL=storage_url, **extra_env)
    return subprocess.Popen([CLI, "backup", "--target", "prod"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def _stage_files(stage: Path) -> list[Path]:
    """Files in the stage other than run locks (the lock of a run of this test process stays until it exits)."""
    return [p for p in _files_under(stage) if p.relative_to(stage).parts[0] != ".locks"]


def _only_row(capsys) -> dict:
    code, out, err = cli(capsys, "list", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    return row


def test_every_job_runs_its_ops_in_one_process():
    assert {job.name: job.executor_def.name for job in defs().resolve_all_job_defs()} == dict.fromkeys(
        ["backup", "drill", "restore", "retention"], "in_process")


@pytest.mark.slow
def test_a_backup_killed_during_pg_dump_is_resolved_failed_and_its_stage_deleted(env, big_dsn, capsys):
    proc = _start_backup(big_dsn, env.local_storage_url)

    def pg_dump():
        try:
            return next((p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "pg_dump"), None)
        except psutil.NoSuchProcess:
            return None

    dumper = _wait(pg_dump, 60, "pg_dump to start")
    time.sleep(0.3)
    _kill(proc)
    gone, alive = psutil.wait_procs([dumper], timeout=10)
    assert not alive, "pg_dump outlived the killed backup"
    storage_root = Path(env.local_storage_url.removeprefix("file://"))
    # The archive streams straight into storage's temp file, not the stage.
    assert _files_under(storage_root), "the dump had written nothing yet: the kill came too late or too early"

    row = _only_row(capsys)  # `list` resolves the dead run first
    assert row["status"] == "failed"
    assert row["error"] == f"interrupted: the run {row['dagster_run_id']} died before finishing"
    assert _files_under(env.stage_dir) == []
    assert _files_under(storage_root) == []  # its temp file went with it
    assert list(env.stage_dir.iterdir()) == [env.stage_dir / ".locks"]
    with dg.DagsterInstance.get() as instance:  # no longer STARTED forever: failure sensors and the UI see it
        assert instance.get_run_by_id(row["dagster_run_id"]).status == dg.DagsterRunStatus.FAILURE


@pytest.mark.slow
def test_a_backup_killed_after_its_upload_is_resolved_completed_and_usable(env, source_dsn, restore_server,
                                                                           capsys, tmp_path):
    marker = tmp_path / "published"
    proc = _start_backup(source_dsn, env.local_storage_url, **{PAUSE_ENV: f"after-publish:{marker}"})
    _wait(marker.exists, 120, "the upload to finish")
    _kill(proc)
    assert env.history().list()[0].status == "running"

    # The next run (here a restore of that very backup) resolves the row before it looks the backup up.
    backup_id = env.history().list()[0].id
    to_dsn = restore_server.create_database("restored")
    code, out, err = cli(capsys, "restore", "--backup-id", backup_id, "--to-dsn", to_dsn, "--json")
    assert code == 0, err
    row = env.history().get(backup_id)
    assert (row.status, row.verification_status) == ("completed", "checksum_ok")
    assert json.loads(out)["row_counts"] == row.row_counts and row.row_counts["sales.order_items"] == 20000
    assert row.manifest_uri.startswith(env.local_storage_url) and row.sha256
    assert _stage_files(env.stage_dir) == []
    assert [p.stem for p in (env.stage_dir / ".locks").glob("*.lock")] != [row.dagster_run_id]

    code, out, err = cli(capsys, "drill", "--backup-id", backup_id, "--json")
    assert code == 0, err
    assert json.loads(out)["verification_status"] == "verified"

    env.history().set_retention(backup_id, datetime.now(UTC) - timedelta(days=1))
    code, out, err = cli(capsys, "retention", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert backup_id in [e["backup_id"] for e in plan["expire"] + plan["kept"]]


@pytest.fixture
def tiny_storage(tmpfs):
    """Backup storage on a 1 MB tmpfs: the storage check passes, the upload hits a full disk."""
    return tmpfs("storage", "size=1m")


@pytest.mark.slow
def test_a_permanently_failed_upload_leaves_no_stage_files(env, big_dsn, tiny_storage, capsys):
    code, out, err = cli(capsys, "backup", "--target", "prod", "--dsn", big_dsn, "--storage",
                         tiny_storage.as_uri(), "--json")
    assert code == 1 and "disk full" in err
    assert json.loads(out)["status"] == "failed"
    assert _stage_files(env.stage_dir) == []
    assert [p.name for p in env.stage_dir.iterdir()] == [".locks"]
    assert _files_under(tiny_storage) == []  # the temp file of the failed write is gone too


def test_the_next_retention_run_sweeps_a_killed_local_upload(env, configure, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL"}}, {"SHOP_URL": source_dsn})
    root = Path(env.local_storage_url.removeprefix("file://"))
    partial = _killed_local_upload(root, "shop/2026/01/01/shop_20260101T000000Z_aaaa.dump.zst")
    code, out, err = cli(capsys, "retention", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["partial_files"] == []  # just written: a killed writer and a starting one look alike
    old = (datetime.now(UTC) - timedelta(minutes=5)).timestamp()
    os.utime(partial, (old, old))
    code, out, err = cli(capsys, "retention")
    assert code == 0, err
    assert f"sweep  {partial.as_uri()} (temp file of a killed local upload)" in out
    assert not partial.exists()
    (logged,) = [e for e in env.history().retention_log(target="shop") if e["action"] == "delete_partial"]
    assert logged["object_uri"] == partial.as_uri() and not logged["dry_run"]


@pytest.mark.slow
def test_a_backup_killed_during_its_streamed_s3_upload_leaves_no_manifest_and_no_parts(
        env, big_dsn, s3_server, s3_bucket, monkeypatch, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from throttle_proxy import ThrottleProxy

    from backup_pipeline_tests.fix_s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY
    s3_env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
              "AWS_REGION": "us-east-1"}
    client = __import__("boto3").client("s3", endpoint_url=s3_server, region_name="us-east-1",
                                        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)

    def upload_started():
        return client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])

    with ThrottleProxy(upstream_port=int(s3_server.rsplit(":", 1)[1]), mbit_per_s=40) as proxy:
        proc = _start_backup(big_dsn, f"s3://{s3_bucket}/b", AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}",
                             **s3_env)
        try:
            _wait(upload_started, 120, "the streamed archive upload to start")
            dumper = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "pg_dump"]
            assert dumper, "pg_dump had already finished: dump and upload did not overlap"
        finally:
            _kill(proc)
        psutil.wait_procs(dumper, timeout=10)

    for var, value in {**s3_env, "AWS_ENDPOINT_URL": s3_server, "BACKUP_STORAGE_URL": f"s3://{s3_bucket}/b"}.items():
        monkeypatch.setenv(var, value)
    row = _only_row(capsys)  # `list` resolves the dead run: no manifest, so failed, and its upload is aborted
    assert row["status"] == "failed" and row["error"].startswith("interrupted")
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert _stage_files(env.stage_dir) == []


_MATERIALIZE = """
import dagster as dg
from backup_pipeline.definitions import defs
with dg.DagsterInstance.get() as instance:
    defs().resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey(["backups", "prod"])], instance=instance, raise_on_error=False)
"""


@pytest.mark.slow
def test_an_asset_run_killed_mid_drill_leaves_a_completed_undrilled_backup_and_no_server(
        env, configure, big_dsn, capsys):
    # What "Materialize" on backups/prod runs, in its own process, killed -9 while its drill server restores.
    configure({"prod": {"dsn_env": "PROD_URL"}}, {"PROD_URL": big_dsn})
    proc = subprocess.Popen([sys.executable, "-c", _MATERIALIZE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def drill_server():
        try:
            return [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() in ("postgres", "pg_restore")]
        except psutil.NoSuchProcess:
            return None

    _wait(lambda: any(p.name() == "pg_restore" for p in drill_server() or []), 120, "the drill's pg_restore")
    servers = drill_server()
    _kill(proc)
    gone, alive = psutil.wait_procs(servers, timeout=20)
    assert not alive, f"the drill's processes outlived the killed run: {alive}"

    row = _only_row(capsys)  # its backup was uploaded and recorded before the drill: never judged, not failed
    assert (row["status"], row["verification_status"]) == ("completed", "pending")
    assert _stage_files(env.stage_dir), "the kill came after the drill had cleaned up"

    code, out, err = cli(capsys, "drill", "--backup-id", row["backup_id"], "--json")  # the next run
    assert code == 0, err
    assert json.loads(out)["verification_status"] == "verified"  # the backup itself is whole
    assert _stage_files(env.stage_dir) == []  # the dead run's stage (its decompressed dump) went first
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(row["dagster_run_id"])
        assert (run.job_name, run.status) == ("__ASSET_JOB", dg.DagsterRunStatus.FAILURE)
