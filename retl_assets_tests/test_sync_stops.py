"""What a run that stops owes, and the engine's hooks (progress, per-record outcomes)."""

from __future__ import annotations

from dagster import DagsterEventType

from retl_assets.destinations import open_destination
from retl_assets.sync import run_sync
from retl_assets_tests.conftest import free_port


def test_a_dead_destination_fails_the_run_with_what_it_owes_then_delivers_it_once(
        workspace, emulator):
    text = (workspace.root / "retl.yaml").read_text()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    workspace.write(text.replace(emulator.url, dead).replace("max_retries: 8", "max_retries: 1"))

    run = workspace.sync()

    assert run.status == "failure"
    assert any("could not be reached" in e for e in run.errors), run.errors
    failures = [r.dagster_event for r in workspace.instance.all_logs(run.run_id)
                if r.dagster_event is not None
                and r.dagster_event.event_type == DagsterEventType.STEP_FAILURE]
    assert len(failures) == 1 and "contacts_identify" in failures[0].step_key
    meta = failures[0].step_failure_data.user_failure_data.metadata
    assert {k: meta[k].value for k in ("owed", "succeeded", "sent")} == {
        "owed": 300, "succeeded": 0, "sent": 0}
    assert set(meta) >= {"failed", "rejected", "invalid", "unsent", "unconfirmed", "retries",
                         "duration_s", "records_per_s"}
    # The delivery the stop cut short still counts its retries (max_retries: 1).
    assert meta["retries"].value >= 1

    workspace.write(text)  # the destination is back
    again = workspace.sync()
    assert again.status == "success", again.errors
    assert again.syncs["contacts_identify"]["succeeded"] == 300
    stats = emulator.state()["stats"]
    assert (stats["messages_accepted"], stats["duplicates"]) == (300, 0)
    assert len(emulator.state()["profiles"]) == 300


def test_the_hooks_hear_every_record_and_the_progress_reaches_the_total(workspace, emulator):
    workspace.sql("INSERT INTO contacts VALUES ('', 'blank@example.com', 'B', 'free', 1, "
                  "TIMESTAMP '2026-02-03')")
    workspace.sync(assets=["models/contacts", "diffs/contacts"])  # committed, not yet synced
    project = workspace.project
    seen: list[tuple[str, str, str, str | None]] = []
    progress: list[tuple[int, int]] = []

    result = run_sync(project, workspace.store, "contacts_identify",
                      open_destination(project, "cio"), progress=lambda d, t: progress.append(
                          (d, t)), observe=seen.extend)

    assert (result.succeeded, result.invalid, result.work) == (300, 1, 301)
    assert len(seen) == 301 and len({key for key, *_ in seen}) == 301
    assert {s for _, _, s, _ in seen if s != "invalid"} == {"delivered"}
    assert ("", "identify", "invalid", "identify needs userId or anonymousId") in seen
    assert progress[-1] == (301, 301)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
