"""Operations commands: status KPIs, history sync from storage, trigger through a running webserver."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from backup_pipeline.cli import main
from backup_pipeline.core.ephemeral import free_port
from backup_pipeline.launch import run_backup

ROOT = Path(__file__).resolve().parent.parent


def test_status_and_history_sync(configure, backup_env, source_dsn, capsys, monkeypatch, tmp_path):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False, "retention_days": 90}}, {"SHOP_URL": source_dsn})
    first = run_backup("shop")[1]
    second = run_backup("shop", dsn_env="NOT_SET_ANYWHERE")[1]  # a failed attempt
    assert second.status == "failed"
    assert main(["status", "--json"]) == 0
    [kpi] = json.loads(capsys.readouterr().out)
    assert (kpi["target"], kpi["total_30d"], kpi["completed_30d"], kpi["success_rate_30d"]) == ("shop", 2, 1, 50.0)
    assert main(["status"]) == 0
    assert "shop" in capsys.readouterr().out

    monkeypatch.setenv("BACKUP_HISTORY_URL", f"sqlite:///{tmp_path / 'rebuilt.sqlite'}")
    assert main(["history", "sync", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"target": "shop", "storage": backup_env.local_storage_url, "added": 1, "already_recorded": 0}]
    assert main(["history", "sync", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["already_recorded"] == 1
    assert main(["list", "--json"]) == 0
    [rebuilt] = json.loads(capsys.readouterr().out)
    assert (rebuilt["backup_id"], rebuilt["sha256"], rebuilt["source"]) == (first.id, first.sha256, "manifest")
    # Rebuilt rows keep the target's retention, not the history's 30-day default: retention must not come early.
    rebuilt_until = datetime.fromisoformat(rebuilt["retention_until"])
    assert abs((rebuilt_until - first.retention_until).total_seconds()) < 60  # 90 days from its start, not 30


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not come up")


def test_trigger_launches_a_run_on_a_running_webserver(configure, backup_env, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False, "retention_days": 90}}, {"SHOP_URL": source_dsn})
    # No daemon in this test: launch runs as they are submitted instead of queueing them.
    Path(os.environ["DAGSTER_HOME"], "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/server_info", 90)
        assert main(["trigger", "--target", "shop", "--url", f"http://127.0.0.1:{port}", "--json"]) == 0
        launched = json.loads(capsys.readouterr().out)
        assert launched["url"] == f"http://127.0.0.1:{port}/runs/{launched['run_id']}"
        deadline = time.monotonic() + 120
        while (record := backup_env.history().find_by_run(launched["run_id"], "shop")) is None or record.status == "running":
            assert time.monotonic() < deadline, "the triggered run never finished"
            time.sleep(1)
        assert record.status == "completed" and record.type == "manual"
    finally:
        server.terminate()
        server.wait(30)


def test_trigger_names_the_url_when_no_webserver_answers(capsys):
    port = free_port()
    assert main(["trigger", "--target", "shop", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert f"http://127.0.0.1:{port}" in capsys.readouterr().err
