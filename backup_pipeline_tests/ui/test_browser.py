"""The Dagster UI in a real browser: headless chromium against a real dagster-webserver on 127.0.0.1.

What a person sees after a verified backup: the asset page says verified and
shows the row counts, lists the daily schedule as its automation, and its
Materialize button is live and runs a backup; the backup job's launchpad
offers the targets as a partition picker and opens without a config error.
Screenshots are left in the test's folder (and in $BACKUP_PIPELINE_UI_SHOTS if set).
"""

import os
import shutil
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from backup_pipeline.dagster_home import instance_yaml
from backup_pipeline.definitions import defs
from backup_pipeline.resources import TARGET_TAG
from backup_pipeline_tests.deploy.deployment import daemon, stop, wait_for_daemon, webserver
from backup_pipeline_tests.ui.browser import Browser, chromium_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install -y chromium)"),
]


CLICK = ("(() => {{ const el = [...document.querySelectorAll('a,button')].find(e => e.textContent.trim() === {!r});"
         " if (el) {{ el.click(); return true }} return false }})()")
LINK = ("(() => {{ const el = [...document.querySelectorAll('a')].find(e => e.textContent.trim() === {!r});"
        " return el ? el.getAttribute('href') : null }})()")
ENABLED = ("(() => {{ const el = [...document.querySelectorAll('button')].find(e => e.textContent.trim() === {!r});"
           " return el ? !el.disabled : null }})()")
OPEN_PARTITIONS = ("(() => { const i = document.querySelector('input[placeholder=\"Partition\"]');"
                   " if (!i) return false; i.focus(); i.click(); return true })()")


def _shot(browser: Browser, folder: Path, name: str) -> Path:
    path = browser.screenshot(folder / f"{name}.png")
    if keep := os.environ.get("BACKUP_PIPELINE_UI_SHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def _serve(log: Path) -> tuple:
    server, url = webserver(dict(os.environ), log)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=2):
                return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise AssertionError(f"dagster-webserver did not come up: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)


def _asset_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return instance.get_runs(filters=dg.RunsFilter(job_name="__ASSET_JOB"))


def _materialize(browser: Browser, seconds: float) -> dg.DagsterRun:
    """Click Materialize (past the sign-up dialog a fresh profile may get) and return the run once it finished."""
    deadline = time.monotonic() + seconds
    with dg.DagsterInstance.get() as instance:
        while not (runs := _asset_runs(instance)):
            assert time.monotonic() < deadline, "Materialize launched no run"
            browser.evaluate(CLICK.format("Skip"))
            assert browser.evaluate(CLICK.format("Materialize")), "no Materialize button"
            for _ in range(10):  # a launch takes a moment to show; clicking again would launch a second run
                if _asset_runs(instance):
                    break
                time.sleep(0.5)
        [run] = runs
        while not (run := instance.get_run_by_id(run.run_id)).is_finished:
            assert time.monotonic() < deadline, f"asset run {run.run_id} still {run.status.value} after {seconds:.0f}s"
            time.sleep(1)
        return run


def test_asset_page_and_launchpad_in_a_browser(configure, backup_env, source_dsn, tmp_path):
    configure({"shop": {"dsn_env": "SHOP_URL"}, "crm": {"dsn_env": "CRM_URL", "schedule": None}},
              {"SHOP_URL": source_dsn, "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    (tmp_path / "dagster_home" / "dagster.yaml").write_text(instance_yaml())  # the CLI's: run queue, our coordinator
    with dg.DagsterInstance.get() as instance:
        result = defs().resolve_job_def("backup").execute_in_process(partition_key="shop", instance=instance)
    assert result.success
    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert record.verification_status == "verified"

    # Storage exists (the run above made it) before the daemon and the webserver start.
    queue = daemon(dict(os.environ), tmp_path / "daemon.log")
    server, url = _serve(tmp_path / "webserver.log")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.open(f"{url}/assets/backups/shop")
        page = browser.wait_for("verification_status", "verified", record.id, "row_counts", "total_rows",
                                "Fails if more than 26 hours since last materialization", seconds=60)
        _shot(browser, tmp_path, "asset_backups_shop")
        assert "pending" not in page and "Unexpected GraphQL error" not in page
        assert "No automations found" not in page
        assert "backup_shop" in page and "At 02:00 AM UTC" in page  # Automation details: its job and schedule
        assert browser.evaluate(LINK.format("daily_backup_shop")) == "/locations/backup_pipeline/schedules/daily_backup_shop"
        assert browser.evaluate(ENABLED.format("Materialize")) is True, "Materialize is missing or disabled"

        wait_for_daemon(dg.DagsterInstance.get, queue, tmp_path / "daemon.log")
        run = _materialize(browser, seconds=120)  # a real backup: the webserver queues it, the daemon runs it
        assert (run.status, run.job_name, run.tags[TARGET_TAG]) == (dg.DagsterRunStatus.SUCCESS, "__ASSET_JOB", "shop")
        made = backup_env.history().find_by_run(run.run_id, "shop")
        assert made.verification_status == "verified"
        browser.open(f"{url}/assets/backups/shop?view=checks")
        page = browser.wait_for(made.id[:8], "restorable", "drill_fresh", "row_counts_plausible", "Succeeded",
                                seconds=60)
        _shot(browser, tmp_path, "asset_materialized_checks")
        assert page.count("Succeeded") == 5 and "Skipped" not in page, page[:1500]  # all five checks ran and passed

        browser.open(f"{url}/locations/backup_pipeline/jobs/backup/playground")
        page = browser.wait_for("Partition", "No errors", "No missing config", "Launch Run", seconds=60)
        assert "Missing required config entry" not in page
        assert "crm" not in page
        deadline = time.monotonic() + 30
        while "crm" not in (picker := browser.text()) and time.monotonic() < deadline:
            # A fresh browser profile gets a community sign-up dialog, sometimes only after a while: dismiss it.
            browser.evaluate(CLICK.format("Skip"))
            assert browser.evaluate(OPEN_PARTITIONS), "no partition picker on the launchpad"
            time.sleep(1)
        assert "crm\nshop" in picker, picker[-500:]  # the configured targets, offered as partitions
        _shot(browser, tmp_path, "launchpad_backup")
        assert "Missing required config entry" not in picker
    finally:
        browser.close()
        stop(server)
        stop(queue)
