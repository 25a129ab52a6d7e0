"""The Dagster UI in a real browser: headless chromium against a real dagster-webserver on 127.0.0.1.

What a person sees after a verified backup: the asset page says verified and
shows the row counts, and its description links to the daily schedule and to the
launchpad that makes it (an op job's asset has no Materialize button or
automations in Dagster: see defs/backup/assets.py); the backup job's launchpad
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

from backup_pipeline.definitions import defs
from backup_pipeline_tests.deploy.deployment import stop, webserver
from backup_pipeline_tests.ui.browser import Browser, chromium_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install -y chromium)"),
]


CLICK = ("(() => {{ const el = [...document.querySelectorAll('a,button')].find(e => e.textContent.trim() === {!r});"
         " if (el) {{ el.click(); return true }} return false }})()")
LINK = ("(() => {{ const el = [...document.querySelectorAll('a')].find(e => e.textContent.trim() === {!r});"
        " return el ? el.getAttribute('href') : null }})()")
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


def test_asset_page_and_launchpad_in_a_browser(configure, backup_env, source_dsn, tmp_path):
    configure({"shop": {"dsn_env": "SHOP_URL"}, "crm": {"dsn_env": "CRM_URL", "schedule": None}},
              {"SHOP_URL": source_dsn, "CRM_URL": "postgresql://u@127.0.0.1:9/crm"})
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.get() as instance:
        result = defs().resolve_job_def("backup").execute_in_process(partition_key="shop", instance=instance)
    assert result.success
    record = backup_env.history().find_by_run(result.run_id, "shop")
    assert record.verification_status == "verified"

    server, url = _serve(tmp_path / "webserver.log")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.open(f"{url}/assets/backups/shop")
        page = browser.wait_for("verification_status", "verified", record.id, "row_counts", "total_rows",
                                "Fails if more than 26 hours since last materialization", seconds=60)
        _shot(browser, tmp_path, "asset_backups_shop")
        assert "pending" not in page and "Unexpected GraphQL error" not in page
        assert "daily_backup_shop (0 2 * * * UTC)" in page  # the schedule, in the definition's metadata
        assert browser.evaluate(LINK.format("daily_backup_shop")) == "/locations/backup_pipeline/schedules/daily_backup_shop"
        assert browser.evaluate(LINK.format("launch it")) == "/locations/backup_pipeline/jobs/backup/playground"

        assert browser.evaluate(CLICK.format("launch it")), "no launch link in the asset's description"
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
