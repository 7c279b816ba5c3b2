"""The Dagster UI on a retl project, looked at in a real browser: the asset graph, a sync's
counts and rejected rows, a check's result, and the schedule skipping a tick while a run of
the same model is still going.

One test: the webserver, the daemon and a slow run are expensive to start, and pytest-xdist
would start them again for each test of a module-scoped fixture.
Set RETL_SCREENSHOTS=docs/screenshots (or run scripts/screenshots.py) to save screenshots.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from dagster import DagsterRunStatus, RunsFilter

from retl_assets_tests.ui.browser import CHROMIUM, browser_page, chromium_path
from retl_assets_tests.ui.stack import (
    REJECTED_KEY,
    REPO,
    SCHEDULE,
    Stack,
    build_stack,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

ASSETS = {"models/contacts", "diffs/contacts", "syncs/contacts_identify",
          "syncs/contacts_deleted"}
JOB = "retl_contacts"
SYNC = "syncs/contacts_identify"
# The emulator's latency while the slow run sends 300 rows, 5 per request, one at a time:
# about 150 s, more than a minute boundary and a daemon loop need; dropped once seen.
SLOW_MS = 2500


def shots_dir() -> Path | None:
    folder = os.environ.get("RETL_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_ui_shows_assets_counts_checks_and_a_skipped_tick(tmp_path):
    assert chromium_path(), (f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run "
                             "does), or point RETL_CHROMIUM at one")
    stack = build_stack(tmp_path)
    try:
        first = stack.retl("sync", "contacts", "--json")
        webserver = stack.start_webserver()
        daemon = stack.start_daemon()
        assert first.popen.wait(timeout=120) == 0, first.tail()
        counts = json.loads(first.stdout().strip().splitlines()[-1])["syncs"]["contacts_identify"]
        assert counts["rejected"] == 1 and counts["succeeded"] == 299, counts

        slow = start_slow_run(stack)
        stack.dagster("schedule", "start", SCHEDULE)
        stack.wait_until_served(webserver)
        stack.graphql("mutation { setNuxSeen }")  # no "join the community" dialog over pages

        shots = shots_dir()
        with browser_page() as page:
            graph_shows_every_asset(page, stack)
            sync_page_shows_counts_and_rejected_rows(page, stack, counts)
            check_shows_passed(page, stack)

            skipped = wait_for_skipped_tick(stack, daemon)
            # The tick is recorded: stop ticking, then let the slow run finish.
            daemon.stop()
            stack.emulator.set_faults(latency_ms=0)
            assert slow.popen.wait(timeout=60) == 0, slow.tail()
            schedule_page_shows_skip_reason(page, stack, skipped)
            if shots:
                page.screenshot(path=shots / "schedule-skipped-tick.png")
                save_screenshots(page, stack, shots)  # now that no run is going
    finally:
        stack.close()


def start_slow_run(stack: Stack):
    """A `retl sync --full-resync` that stays in progress until the latency is dropped."""
    stack.emulator.set_faults(latency_ms=SLOW_MS)
    before = stack.emulator.state()["stats"]["requests"]
    slow = stack.retl("sync", "contacts", "--full-resync")
    with stack.instance() as instance:
        def sending():
            assert slow.alive(), slow.tail()
            started = instance.get_runs(RunsFilter(job_name=JOB,
                                                   statuses=[DagsterRunStatus.STARTED]))
            return started and stack.emulator.state()["stats"]["requests"] > before
        wait_for("the slow run to start sending", sending, timeout=90, every=0.2)
    return slow


def graph_shows_every_asset(page, stack: Stack) -> None:
    """Global lineage draws a node per asset; selecting one (in the view's asset list) puts
    its full key in the address, which holds whatever the node's label becomes."""
    page.goto(f"{stack.url}/asset-groups")
    page.wait_for_selector("foreignObject")  # each graph node is one
    wait_for("the graph to draw every asset",
             lambda: page.locator("foreignObject").count() == len(ASSETS), timeout=30)
    items = page.locator(".GrayOnHoverBox")  # the lineage view's asset list, one per node
    assert items.count() == len(ASSETS), items.all_text_contents()
    shown = set()
    for i in range(items.count()):
        before = page.url
        items.nth(i).click()
        page.wait_for_function("url => location.href !== url", arg=before)
        shown.add(unquote(urlparse(page.url).path).removeprefix("/asset-groups/"))
    assert shown == ASSETS


def metadata_value(page, label: str):
    """The value cell of the latest materialisation's metadata row named `label` (a value may
    be a table of its own: only the row's own cells count)."""
    row = page.locator("tr").filter(
        has=page.locator(":scope > td").first.filter(has_text=re.compile(rf"^\s*{label}\s*$")))
    return row.locator(":scope > td").last


def sync_page_shows_counts_and_rejected_rows(page, stack: Stack, counts: dict) -> None:
    page.goto(f"{stack.url}/assets/{SYNC}")
    page.get_by_text("Latest materialization").wait_for()
    for label in ("sent", "succeeded", "failed", "rejected"):
        value = metadata_value(page, label)
        value.wait_for()
        assert value.inner_text().strip() == str(counts[label]), label
    errors = metadata_value(page, "errors")
    assert REJECTED_KEY in errors.inner_text()  # the rejected-rows table has its row


def check_shows_passed(page, stack: Stack) -> None:
    page.goto(f"{stack.url}/assets/models/contacts?view=checks&checkDetail=primary_key_unique")
    result = page.get_by_text("Evaluation result", exact=True).locator("xpath=..")
    result.wait_for()
    assert "Passed" in result.inner_text(), result.inner_text()


def wait_for_skipped_tick(stack: Stack, daemon) -> dict:
    """The daemon ticks the 1-minute schedule at the next minute boundary; the slow run is
    still going, so the schedule's own check skips the tick and says why."""
    def skipped():
        assert daemon.alive(), daemon.tail()
        ticks = stack.schedule_ticks()
        assert not any(t["runIds"] for t in ticks), f"a tick started a run: {ticks}"
        return next((t for t in ticks if t["status"] == "SKIPPED"), None)
    tick = wait_for("a skipped tick of the schedule", skipped, timeout=100, every=1)
    assert "model contacts: skipping this tick" in tick["skipReason"], tick
    assert "still started" in tick["skipReason"], tick
    return tick


def schedule_page_shows_skip_reason(page, stack: Stack, tick: dict) -> None:
    """The tick history lists the skipped tick ("0 runs requested"); hovering its status
    shows the schedule's reason."""
    page.goto(f"{stack.url}/locations/{REPO}/schedules/{SCHEDULE}")
    history = page.locator("table").filter(has=page.locator("th", has_text="Status"))
    row = history.locator("tbody tr").filter(has_text="0 runs requested").first
    row.wait_for()
    status = row.locator(":scope > td").nth(1)
    status.get_by_text("0 runs requested").hover()
    reason = page.get_by_text(tick["skipReason"], exact=True)
    reason.wait_for()
    assert reason.inner_text().startswith("model contacts: skipping this tick, run ")


def save_screenshots(page, stack: Stack, shots: Path) -> None:
    """The pictures README shows: the graph, a sync's metadata, its rejected-rows table."""
    page.goto(f"{stack.url}/asset-groups")
    wait_for("the graph", lambda: page.locator("foreignObject").count() == len(ASSETS), 30)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=shots / "asset-graph.png")
    page.goto(f"{stack.url}/assets/{SYNC}")
    errors = metadata_value(page, "errors")
    errors.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=shots / "sync-metadata.png")
    errors.locator("xpath=..").screenshot(path=shots / "rejected-rows.png")
