"""`backup-pipeline` as a user runs it: JSON out, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import psycopg
import pytest

from backup_pipeline.cli import main
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD
from backup_pipeline_tests.pgcheck import fingerprint

REQUIRED_KEYS = {
    "backup_id", "target", "type", "status", "archive_uri", "manifest_uri", "size_bytes", "sha256",
    "row_counts", "started_at", "finished_at", "dagster_run_id",
}


@pytest.fixture
def cli_env(backup_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return backup_env


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_backup_list_restore_round_trip(cli_env, capsys, source_dsn, restore_server):
    code, out, err = run_cli(
        capsys, "backup", "--target", "shop", "--dsn", source_dsn, "--storage", cli_env.local_storage_url, "--json"
    )
    assert code == 0, err
    backup = json.loads(out)
    assert REQUIRED_KEYS <= backup.keys()
    assert backup["status"] == "completed" and backup["type"] == "manual"
    assert backup["row_counts"]["sales.order_items"] == 20000

    code, out, _ = run_cli(capsys, "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [b["backup_id"] for b in listed] == [backup["backup_id"]]
    assert {"verification_status", "retention_until"} <= listed[0].keys()

    to_dsn = restore_server.create_database("restored")
    code, out, err = run_cli(capsys, "restore", "--backup-id", backup["backup_id"], "--to-dsn", to_dsn, "--json")
    assert code == 0, err
    assert json.loads(out)["row_counts"] == backup["row_counts"]
    assert fingerprint(to_dsn) == fingerprint(source_dsn)
    assert SOURCE_PASSWORD not in out + err


def test_failed_backup_exits_non_zero_with_one_line_error(cli_env, capsys, source_dsn):
    bad = source_dsn.replace(SOURCE_PASSWORD, "nope-" + SOURCE_PASSWORD)
    code, out, err = run_cli(
        capsys, "backup", "--target", "shop", "--dsn", bad, "--storage", cli_env.local_storage_url, "--json"
    )
    assert code == 1
    assert err.startswith("error: cannot connect to postgres@127.0.0.1") and err.count("\n") == 1
    assert json.loads(out)["status"] == "failed"
    assert SOURCE_PASSWORD not in out + err


def test_unknown_target_without_dsn_names_the_fix(cli_env, capsys):
    code, _out, err = run_cli(capsys, "backup", "--target", "nowhere")
    assert code == 1 and "unknown target 'nowhere'" in err and "backup_targets.yaml" in err


def test_restore_of_unknown_backup_id(cli_env, capsys, restore_server):
    code, _out, err = run_cli(capsys, "restore", "--backup-id", "does-not-exist", "--to-dsn", restore_server.dsn())
    assert code == 1 and "no backup with id 'does-not-exist'" in err


def test_console_script_backs_up_from_the_seed_environment_variables(cli_env, source_dsn, tmp_path):
    """DATABASE_URL as in seed 003's `DATABASE_URL=... backup prod`, run as a real process."""
    env = dict(os.environ, DATABASE_URL=source_dsn, BACKUP_STORAGE_URL=cli_env.local_storage_url)
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "backup-pipeline"), "backup", "--target", "prod", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["target"] == "prod" and record["archive_uri"].startswith(cli_env.local_storage_url + "/prod/")
    assert SOURCE_PASSWORD not in proc.stdout + proc.stderr
    with psycopg.connect(source_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.customers").fetchone()[0] == record["row_counts"]["public.customers"]


def test_verify_checks_the_stored_archive(cli_env, capsys, source_dsn):
    code, out, _ = run_cli(capsys, "backup", "--target", "shop", "--dsn", source_dsn, "--storage",
                           cli_env.local_storage_url, "--json")
    backup = json.loads(out)
    code, out, err = run_cli(capsys, "verify", "--backup-id", backup["backup_id"])
    assert code == 0 and "matches its manifest" in out
    archive = cli_env.local_storage_url.removeprefix("file://") + backup["archive_uri"].split("storage", 1)[1]
    with open(archive, "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x00\x00")
    code, out, err = run_cli(capsys, "verify", "--backup-id", backup["backup_id"])
    assert code == 1 and "does not match its manifest" in err
    code, out, _ = run_cli(capsys, "list", "--json")
    assert json.loads(out)[0]["verification_status"] == "failed"
