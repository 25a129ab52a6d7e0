"""Every command behaves the same way: a line (or JSON) per target, --json everywhere, its own usage, aligned tables."""

import json
import os
import subprocess
import sys

import pytest

from backup_pipeline_tests.fix_pg import SOURCE_PASSWORD

CLI = os.path.join(os.path.dirname(sys.executable), "backup-pipeline")
LONG = "warehouse-analytics-replica-eu-west"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_drill_without_target_drills_every_target_and_says_so(configure, backup_env, source_dsn):
    configure({"shop": {"dsn_env": "SHOP_URL"}, LONG: {"dsn_env": "EMPTY_URL"}}, {"SHOP_URL": source_dsn})
    backup = run("backup", "--target", "shop")
    assert backup.returncode == 0, backup.stderr
    line = backup.stdout.strip()
    assert line.startswith("backup ") and " of shop: completed, " in line
    assert "; checksum_ok: " in line or "; verified: " in line, line

    plain = run("drill")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 2, plain.stdout
    assert lines[0].startswith("drill of backup ") and "(shop): verified: " in lines[0]
    assert lines[1] == f"drill of target {LONG}: no backup in storage to drill"

    as_json = run("drill", "--json")
    assert as_json.returncode == 0, as_json.stderr
    results = json.loads(as_json.stdout)
    assert [(r["target"], r["passed"]) for r in results] == [("shop", True), (LONG, True)]
    assert results[0]["verification_status"] == "verified" and results[0]["dagster_run_id"]
    assert results[1]["backup_id"] is None
    assert SOURCE_PASSWORD not in backup.stdout + plain.stdout + as_json.stdout + plain.stderr


@pytest.mark.slow
def test_verify_json_and_a_broken_archive(configure, backup_env, source_dsn):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    backup = run("backup", "--target", "shop", "--json")
    assert backup.returncode == 0, backup.stderr
    record = json.loads(backup.stdout)

    ok = run("verify", "--backup-id", record["backup_id"], "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["ok"] is True and result["backup_id"] == record["backup_id"]
    assert result["checked_sha256"] == record["sha256"] and result["checked_size_bytes"] == record["size_bytes"]

    archive = record["archive_uri"].removeprefix("file://")
    with open(archive, "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x00\x00")
    bad = run("verify", "--backup-id", record["backup_id"], "--json")
    assert bad.returncode == 1
    result = json.loads(bad.stdout)
    assert result["ok"] is False and result["verification_status"] == "failed"
    assert bad.stderr.startswith("error: ") and "does not match its manifest" in bad.stderr


@pytest.mark.parametrize("argv, usage", [
    (["backup", "--target", "x", "--bogus"], "usage: backup-pipeline backup "),
    (["verify", "--backup-id", "x", "--jsn"], "usage: backup-pipeline verify "),
    (["history", "sync", "--bogus"], "usage: backup-pipeline history sync "),
])
def test_an_unknown_flag_shows_the_subcommands_usage(argv, usage):
    proc = run(*argv)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(usage), proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(f"error: unrecognized arguments: {argv[-1]}")


@pytest.mark.parametrize("command", ["list", "status"])
def test_tables_stay_aligned_with_long_target_names(configure, backup_env, command):
    configure({"db": {"dsn_env": "DB_URL"}, LONG: {"dsn_env": "LONG_URL"}}, {})
    history = backup_env.history()
    for target in ("db", LONG):
        record = history.start(target=target, type="manual", retention_days=30)
        history.fail(record.id, "no server")
    proc = run(command)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert sorted(row.split()[2 if command == "list" else 0] for row in rows) == ["db", LONG]
    if command == "list":  # each value starts under its column's name
        for row in rows:
            for column, value in (("target", row.split()[2]), ("type", "manual"), ("status", "failed"), ("verified", "pending")):
                assert row[header.index(column):].startswith(value + " "), (header, row)
    else:  # right-aligned numbers end under their column's name, then the last-backup column starts in line
        end = header.index("30d backups") + len("30d backups")
        last = header.index("last backup (UTC)")
        for row in rows:
            assert row[end - 1] != " " and row[end] == " ", (header, row)
            assert row[last - 2:last] == "  " and row[last] != " ", (header, row)


@pytest.mark.parametrize("argv, verbose", [
    (["list"], False), (["list", "-v"], True), (["-v", "list"], True), (["history", "sync", "--verbose"], True),
])
def test_verbose_is_accepted_before_and_after_the_command(argv, verbose):
    from backup_pipeline.cli import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def test_drill_with_no_target_configured_says_how_to_configure_one(backup_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    proc = run("drill")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith("error: no target is configured") and "DATABASE_URL" in proc.stderr
