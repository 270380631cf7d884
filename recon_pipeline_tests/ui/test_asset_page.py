"""An analyst's view: the materialized mismatch report of one (window, profile), in a real browser.

The reconcile job runs for profile alpha of the demo window into a Dagster instance on disk; the real
``dagster-webserver`` serves that instance; headless Chromium opens the asset's page for the partition
and must show the materialization's metadata: the findings-by-kind counts (as recon_findings holds
them) and, one click away, the worst-findings table. Screenshots land in ``test-artifacts/ui/``.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest

from recon_pipeline.partitions import partition_key
from recon_pipeline_tests.integration.conftest import DEMO_WINDOW
from recon_pipeline_tests.ui.conftest import ARTIFACTS

pytestmark = [pytest.mark.slow, pytest.mark.ui]

PROFILE = "alpha"
# The first render waits for GraphQL over a code server: seconds, more on a loaded 2-core CI machine.
PAGE_TIMEOUT_MS = 30_000


def asset_partition_url(base: str, asset: str, key: str) -> str:
    """Dagster 1.13's asset page, Partitions tab, one partition selected (multi keys are ``profile|window``)."""
    return f"{base}/assets/{asset}?view=partitions&partition={quote(key, safe='')}"


def metadata_value(page, key: str):
    """The value cell of one metadata entry of the selected materialization."""
    row = page.locator("tr").filter(has=page.locator("td", has_text=re.compile(rf"^\s*{re.escape(key)}\s*$")))
    return row.last.locator("td").nth(1)


def test_mismatch_report_metadata_is_on_the_asset_page(browser, ui_world, dagster_webserver):
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # assertions do not follow page.set_default_timeout
    started = time.monotonic()
    outcome = ui_world.reconcile(PROFILE)
    assert outcome.success, outcome.error
    findings = ui_world.table("recon_findings")
    expected = findings[findings["profile_id"] == PROFILE]["kind"].value_counts().to_dict()
    assert expected.get("ORDER_MISSING_FROM_EXCHANGE") == 2 and expected.get("MISSING_EXIT") == 2, expected

    dagster_webserver.wait_ready()
    key = str(partition_key(DEMO_WINDOW, PROFILE))
    assert key == "alpha|2026-11-30-09:00"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(asset_partition_url(dagster_webserver.url, "mismatch_report", key))
        counts = metadata_value(page, "findings_by_kind")
        expect(counts).to_contain_text("ORDER_MISSING_FROM_EXCHANGE")
        expect(page.get_by_text(key).first).to_be_visible()
        expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()

        shown = dict(re.findall(r"^\s*([A-Z_]+)\s+(\d+)\s*$", counts.inner_text(), flags=re.M))
        assert {k: int(v) for k, v in shown.items()} == expected
        expect(metadata_value(page, "missing_from_exchange")).to_have_text("2")
        expect(metadata_value(page, "missing_in_db")).to_have_text(str(expected.get("ORDER_MISSING_IN_DB", 0)))
        page.screenshot(path=str(ARTIFACTS / "mismatch_report_alpha.png"), full_page=True)

        # The worst-findings table is a markdown entry: the page shows it after a click, as a user would.
        metadata_value(page, "worst_findings").get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("worst_findings")
        table = dialog.locator("table")
        expect(table).to_contain_text("T1001")
        rows = table.locator("tr")
        expect(rows.filter(has_text="T1001").filter(has_text="reconcileExitFill")).to_have_count(1)
        expect(rows.filter(has_text="T1002").filter(has_text="PARTIAL_EXIT")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "mismatch_report_alpha_worst_findings.png"), full_page=True)
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_have_count(0)
    finally:
        page.close()
    print(f"ui test: webserver ready after {dagster_webserver.ready_after_s:.1f} s, "
          f"whole test {time.monotonic() - started:.1f} s")
