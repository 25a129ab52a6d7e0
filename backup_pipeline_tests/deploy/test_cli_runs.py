"""CLI runs are first-class runs even without a daemon: the code location's origin, the queue's tag, outputs read back."""

import json
from pathlib import Path

import dagster as dg

from backup_pipeline.cli import main
from backup_pipeline.resources import TARGET_TAG
from backup_pipeline.runs import NO_DAEMON, _recon_job


def test_a_cli_backup_without_a_daemon_runs_here_as_a_run_of_the_code_location(configure, source_dsn, capsys):
    configure({"shop": {"dsn_env": "SHOP_URL", "drill": False}}, {"SHOP_URL": source_dsn})
    assert main(["backup", "--target", "shop", "--json"]) == 0
    out = capsys.readouterr()
    assert NO_DAEMON in out.err
    run_id = json.loads(out.out)["dagster_run_id"]
    assert main(["retention", "--dry-run", "--json"]) == 0  # its plan is the run's output, read back from storage
    assert "expire" in json.loads(capsys.readouterr().out)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        origin = run.remote_job_origin
        assert (origin.location_name, origin.repository_origin.repository_name, origin.job_name) == (
            "backup_pipeline", "__repository__", "backup")
        assert run.job_code_origin is not None and run.tags[TARGET_TAG] == "shop"
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert not instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)


def test_one_process_runs_the_targets_file_it_rewrote_and_captures_no_compute_logs(configure, source_dsn, capsys):
    """The Definitions are loaded once per launch and cached, but never past a change of the targets file."""
    shop = {"dsn_env": "SHOP_URL", "drill": False}
    configure({"shop": shop}, {"SHOP_URL": source_dsn})
    assert main(["backup", "--target", "shop", "--json"]) == 0
    capsys.readouterr()
    configure({"shop": shop, "depot": shop}, {"SHOP_URL": source_dsn})
    assert main(["backup", "--target", "depot", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["dagster_run_id"]
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run.tags["dagster/partition"] == "depot" and run.status == dg.DagsterRunStatus.SUCCESS
        # Runs executed in the CLI's process mirror no stdout/stderr through files and `tail` processes.
        assert not (Path(instance.storage_directory()) / run_id / "compute_logs").exists()
    assert _recon_job("backup").get_definition().partitions_def.get_partition_keys() == ["depot", "shop"]
