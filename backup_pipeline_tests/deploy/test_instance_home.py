"""The shared instance home: the shipped dagster.yaml files, and what `instance init` writes and refuses."""

from pathlib import Path

import dagster as dg
import pytest

from backup_pipeline.cli import main
from backup_pipeline.dagster_home import daemon_alive, ensure_dagster_home, instance_yaml, shipped_before

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_ships_the_repositorys_dagster_yaml_files():
    assert instance_yaml("local") == (ROOT / "dagster.yaml").read_text()
    assert instance_yaml("postgres") == (ROOT / "deploy" / "dagster.yaml").read_text()


@pytest.mark.parametrize("kind", ["local", "postgres"])
def test_both_instance_files_queue_one_run_per_target_and_monitor_runs(kind, tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(instance_yaml(kind))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql+psycopg2://u:p@127.0.0.1:1/never_connected")
    if kind == "postgres":  # checked as config: building the instance would connect
        from dagster._core.instance.config import dagster_instance_config

        config, _ = dagster_instance_config(str(tmp_path))
        assert config["run_monitoring"]["max_runtime_seconds"] == 21600
        assert config["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == "backup_pipeline/target"
        return
    with dg.DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 21600
        assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits[0]["key"] == "backup_pipeline/target"
        assert not daemon_alive(instance)


def test_a_new_home_and_an_old_minimal_one_get_the_full_dagster_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "new"))
    assert (ensure_dagster_home() / "dagster.yaml").read_text() == instance_yaml("local")
    old = tmp_path / "old"
    old.mkdir()
    (old / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(old))
    assert (ensure_dagster_home() / "dagster.yaml").read_text() == instance_yaml("local")
    (old / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")  # someone's own file is kept
    assert (ensure_dagster_home() / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


@pytest.mark.parametrize("kind", ["local", "postgres"])
def test_a_home_with_a_file_shipped_before_the_target_tagging_queue_is_upgraded(kind, tmp_path, monkeypatch):
    before = shipped_before(kind)
    assert "class: QueuedRunCoordinator" in before and "run_queue" not in before  # Dagster's stock queue
    (tmp_path / "dagster.yaml").write_text(before)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert (ensure_dagster_home() / "dagster.yaml").read_text() == instance_yaml(kind)
    edited = before.replace("max_concurrent_runs: 4", "max_concurrent_runs: 8")  # edited by someone: kept
    (tmp_path / "dagster.yaml").write_text(edited)
    assert (ensure_dagster_home() / "dagster.yaml").read_text() == edited


def test_instance_init_creates_the_storage_and_refuses_what_would_not_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_POSTGRES_URL", raising=False)
    assert main(["instance", "init"]) == 0
    assert (tmp_path / "history" / "runs.db").exists() and (tmp_path / "schedules" / "schedules.db").exists()
    assert main(["instance", "init", "--postgres"]) == 1
    assert "DAGSTER_POSTGRES_URL set" in capsys.readouterr().err
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql://u:Secret-pw@127.0.0.1:1/dagster")
    assert main(["instance", "init", "--postgres"]) == 1
    err = capsys.readouterr().err
    assert "postgresql+psycopg2://" in err and "Secret-pw" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "dagster.yaml").read_text() == instance_yaml("local")  # nothing written
    (tmp_path / "dagster.yaml").write_text(instance_yaml("local") + "# mine\n")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql+psycopg2://u:p@127.0.0.1:1/dagster")
    assert main(["instance", "init", "--postgres"]) == 1
    assert "--force" in capsys.readouterr().err
