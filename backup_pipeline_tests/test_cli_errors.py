"""Bad input on the command line: exit 1, one line on stderr naming the object and the fix, no secret."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_pipeline.cli import main
from backup_pipeline.core.errors import ConfigError
from backup_pipeline.core.pgconn import PgConn
from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD
from backup_pipeline.core.history.models import KEEP_FOREVER

CLI = os.path.join(os.path.dirname(sys.executable), "backup-pipeline")


@pytest.fixture
def home(backup_env, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path / "dagster_home"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)


def one_line_error(proc: subprocess.CompletedProcess | str, returncode: int | None = 1) -> str:
    """The error line; notices the launcher prints before it (no daemon, queued) are allowed."""
    stderr = proc if isinstance(proc, str) else proc.stderr
    if returncode is not None and not isinstance(proc, str):
        assert proc.returncode == returncode, stderr
    lines = stderr.splitlines()
    assert stderr.endswith("\n") and lines and lines[-1].startswith("error: "), stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:] and "Traceback" not in stderr, stderr
    return lines[-1]


def test_no_configuration_at_all_says_how_to_configure(home):
    err = one_line_error(run("backup", "--target", "prod"))
    assert "unknown target 'prod' (configured: none)" in err
    assert "DATABASE_URL" in err and "PROD_SUPABASE_DB_URL" in err and "BACKUP_TARGETS_FILE" in err


@pytest.mark.slow  # a real backup run that fails in its first step: ~10 s on 2 shared cores
def test_a_dsn_that_is_not_a_url_gives_one_closed_line_with_the_hint(home, backup_env):
    err = one_line_error(run("backup", "--target", "prod", DATABASE_URL="admin:hunter2secret@db.example.com/app"))
    assert err.endswith("is not a valid PostgreSQL connection string (libpq: missing \"=\" in connection info "
                        "string): use postgresql://user:password@host:5432/dbname")
    assert "hunter2secret" not in err and "admin" not in err
    [record] = backup_env.history().list(target="prod")
    assert record.status == "failed" and "hunter2secret" not in record.error


@pytest.mark.parametrize("dsn", ["not a url hunter2secret", "host=db port", "mysql://admin:hunter2secret@h/db"])
def test_unparsable_dsns_never_echo_what_could_be_a_password(dsn):
    with pytest.raises(ConfigError) as caught:
        PgConn.parse(dsn)
    message = str(caught.value)
    assert "\n" not in message and message.count("(") == message.count(")")
    assert "hunter2secret" not in message and message.endswith("use postgresql://user:password@host:5432/dbname")


@pytest.mark.parametrize("command", [["keep", "nope", "--days", "3"], ["verify", "--backup-id", "nope"],
                                     ["drill", "--backup-id", "nope"]])
def test_unknown_backup_id_is_one_line_and_launches_no_run(home, command):
    err = one_line_error(run(*command))
    assert "no backup with id 'nope'" in err and "backup-pipeline list" in err
    assert not (home / "history" / "runs").exists() or not any((home / "history" / "runs").iterdir())


def test_keep_days_after_forever_counts_from_now(home, backup_env, capsys):
    record = backup_env.history().start(target="shop", type="manual", retention_days=30)
    assert main(["keep", record.id, "--forever"]) == 0
    assert "kept forever" in capsys.readouterr().out
    assert backup_env.history().get(record.id).retention_until == KEEP_FOREVER
    assert main(["keep", record.id, "--days", "10", "--json"]) == 0
    until = datetime.fromisoformat(json.loads(capsys.readouterr().out)["retention_until"])
    assert abs(until - (datetime.now(UTC) + timedelta(days=10))) < timedelta(minutes=1)
    assert main(["keep", record.id, "--days", "5"]) == 0  # a finite date is extended
    assert backup_env.history().get(record.id).retention_until > until + timedelta(days=4)
    assert main(["keep", record.id, "--days", "99999999"]) == 1
    assert "give 1 to 36500 days, or --forever" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["list", "status"])
def test_list_and_status_refuse_a_misspelt_target_but_list_a_retired_one(configure, backup_env, capsys, command):
    configure({"prod": {"dsn_env": "PROD_URL"}}, {})
    assert main([command, "--target", "prdo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown target 'prdo' (configured: prod)" in err
    backup_env.history().start(target="retired", type="manual", retention_days=30)
    assert main([command, "--target", "retired", "--json"]) == 0
    assert "retired" in capsys.readouterr().out


def test_protected_target_refusal_names_the_flag(configure, backup_env, capsys):
    configure({"prod": {"dsn_env": "PROD_URL", "protected": True}},
              {"PROD_URL": "postgresql://app:hunter2secret@127.0.0.1:9/prod"})
    history = backup_env.history()
    record = history.start(target="prod", type="manual", retention_days=30)
    storage = backup_env.local_storage_url
    history.complete(record.id, archive_uri=f"{storage}/prod/2026/01/01/x.dump.zst", globals_uri=None,
                     manifest_uri=f"{storage}/prod/2026/01/01/x.manifest.json", size_bytes=1, sha256="0" * 64,
                     row_counts={}, duration_seconds=1.0, server_version="16", pg_dump_version="16", compression="zstd")
    assert main(["restore", "--backup-id", record.id, "--to", "prod"]) == 1
    err = one_line_error(capsys.readouterr().err)
    assert "pass --confirm prod" in err and "set confirm" not in err
    assert "hunter2secret" not in err


def test_verify_notices_a_manifest_edited_after_the_backup(home, backup_env, source_dsn, capsys, monkeypatch):
    assert main(["backup", "--target", "shop", "--dsn", source_dsn, "--storage", backup_env.local_storage_url,
                 "--json"]) == 0
    backup = json.loads(capsys.readouterr().out)
    manifest_path = Path(backup["manifest_uri"].removeprefix("file://"))
    original = manifest_path.read_bytes()
    edited = json.loads(original)
    edited["row_counts"]["sales.order_items"] = 1
    manifest_path.write_text(json.dumps(edited))

    assert main(["verify", "--backup-id", backup["backup_id"]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was edited or replaced" in err
    assert "row_counts[sales.order_items] is 1 but the history recorded 20000" in err
    assert backup_env.history().get(backup["backup_id"]).verification_status == "failed"

    # A history rebuilt from storage has nothing to compare with: verify says so.
    manifest_path.write_bytes(original)
    monkeypatch.setenv("BACKUP_HISTORY_URL", f"sqlite:///{home.parent / 'rebuilt.sqlite'}")
    assert main(["history", "sync", "--target", "shop", "--storage", backup_env.local_storage_url]) == 0
    assert main(["verify", "--backup-id", backup["backup_id"]]) == 0
    assert "only the checksum was checked" in capsys.readouterr().out


def _fill(directory: Path) -> None:
    with open(directory / "filler", "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.fixture
def tiny_disk(tmpfs) -> Path:
    """A 1 MiB tmpfs: room for a fresh Dagster instance (~320 KiB) and little more."""
    return tmpfs("dagster-home", "size=1m")


@pytest.mark.slow  # two real backup attempts: ~20 s on 2 shared cores
def test_a_full_dagster_home_is_one_line_and_the_cut_short_backup_is_failed(backup_env, source_dsn, tiny_disk):
    env = {"DATABASE_URL": source_dsn, "BACKUP_STORAGE_URL": backup_env.local_storage_url}
    full_home = tiny_disk / "full"
    full_home.mkdir()
    _fill(tiny_disk)
    err = one_line_error(run("backup", "--target", "prod", DAGSTER_HOME=str(full_home), **env))
    assert f"DAGSTER_HOME {full_home} is full" in err and "larger disk" in err
    assert all(r.status == "failed" for r in backup_env.history().list(target="prod"))

    # Now the disk fills up while pg_dump runs.
    shutil.rmtree(full_home)
    (tiny_disk / "filler").unlink()
    home = tiny_disk / "home"
    home.mkdir()
    proc = subprocess.Popen([CLI, "backup", "--target", "prod"], env={**os.environ, **env, "DAGSTER_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = backup_env.history()
    deadline = time.monotonic() + 60
    while not history.list(target="prod", status="running") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    _fill(tiny_disk)
    _out, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert f"DAGSTER_HOME {home} is full" in one_line_error(stderr) and SOURCE_PASSWORD not in stderr
    [record] = history.list(target="prod")
    assert record.status == "failed" or record.verification_status == "failed", record
    assert "is full" in (record.error or record.verification_detail)


def test_keep_of_an_expired_backup_is_one_line(home, backup_env, capsys):
    history = backup_env.history()
    record = history.start(target="shop", type="manual", retention_days=30)
    history.fail(record.id, "pg_dump failed")
    history.mark_expired(record.id, objects_deleted=True)
    assert main(["keep", record.id, "--forever"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"backup {record.id} has expired" in err
