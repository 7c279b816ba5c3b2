"""Progress: throttled lines in Dagster's run log, drawn by `retl sync` as a bar on a
terminal and as plain lines elsewhere."""

from __future__ import annotations

import io
import json
import logging

import pytest
from dagster import DagsterEventType, job, op

from retl_assets.progress import EXTRA, ProgressReporter, ProgressView, Tick, progress_logger
from retl_assets.sync.logs import observers
from retl_assets_tests.conftest import PROJECT
from retl_assets_tests.test_cli import run_retl
from retl_assets_tests.test_sync_logs import duckdb_logs, with_logs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_reporter_logs_at_most_every_few_seconds_and_always_the_last_count():
    clock, lines = Clock(), Lines()
    log = logging.Logger("t")  # noqa: LOG001 - this test's own, unshared
    log.addHandler(lines)
    report = ProgressReporter(log, "contacts_identify", every=5, clock=clock)
    for done in range(0, 1001, 10):  # 101 calls, one every 1/8 s
        report(done, 1000)
        clock.now += 0.125
    report.finish()
    said = [r.getMessage().split(" records answered")[0] for r in lines.records]
    assert said == [f"sync contacts_identify: {n}/1,000" for n in ("0", "400", "800", "1,000")]
    assert lines.records[-1].getMessage() == (
        "sync contacts_identify: 1,000/1,000 records answered (100%), 79 records/s")
    assert getattr(lines.records[-1], EXTRA) == {"sync": "contacts_identify", "done": 1000,
                                                "total": 1000, "per_s": 1000 / 12.625}
    report.finish()
    assert len(lines.records) == 4  # the last count is said once


def test_bar_is_redrawn_in_place_on_a_terminal():
    out = io.StringIO()
    view = ProgressView(out, tty=True, width=10)
    view.extracted("contacts", 20_000)
    view.tick(Tick("contacts_identify", 5_000, 20_000, 2_500.0))
    view.tick(Tick("contacts_identify", 20_000, 20_000, 4_000.0))
    text = out.getvalue()
    assert text.startswith("model contacts: 20,000 rows extracted\n")
    frames = text.split("\n", 1)[1].split("\r")[1:]
    assert frames[0] == ("contacts_identify [##........] 5,000/20,000 records  25%  "
                         "2,500 records/s")
    assert frames[1] == ("contacts_identify [##########] 20,000/20,000 records 100%  "
                         "4,000 records/s\n")


def test_plain_lines_every_few_seconds_or_each_tenth():
    out, clock = io.StringIO(), Clock()
    view = ProgressView(out, tty=False, every=5, clock=clock)
    for done in (0, 50, 90, 100, 150, 160):  # a tick a second: 0%, 5%, 9%, 10%, 15%, 16%
        view.tick(Tick("s", done, 1000, 10.0))
        clock.now += 1
    clock.now += 5
    view.tick(Tick("s", 170, 1000, 10.0))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(": ")[1].split(" records")[0] for line in lines] == [
        "0/1,000", "100/1,000", "170/1,000"]


def test_a_dagster_run_sends_its_progress_lines_to_the_view(instance, monkeypatch):
    monkeypatch.setenv("RETL_PROGRESS_EVERY_S", "0")
    out = io.StringIO()

    @op
    def deliver(context):
        context.log.info("model contacts: extracted 300 rows; diffs/contacts compares them")
        report = ProgressReporter(context.log, "contacts_identify")
        for done in (100, 200, 300):
            report(done, 300)
        report.finish()

    @job(logger_defs={"retl_progress": progress_logger(ProgressView(out, tty=False))})
    def run():
        deliver()

    result = run.execute_in_process(instance=instance,
                                    run_config={"loggers": {"retl_progress": {}}})
    assert result.success
    shown = out.getvalue().splitlines()
    assert shown[0] == "model contacts: 300 rows extracted"
    assert [line.split(" records answered")[0] for line in shown[1:]] == [
        "sync contacts_identify: 100/300", "sync contacts_identify: 200/300",
        "sync contacts_identify: 300/300"]
    # The run's own log in the instance holds the same lines.
    logged = [r.user_message for r in instance.all_logs(result.run_id)
              if r.dagster_event is None and "records answered" in r.user_message]
    assert len(logged) == 3


def test_observers_give_the_sync_asset_its_three_hooks(workspace, monkeypatch):
    monkeypatch.setenv("RETL_PROGRESS_EVERY_S", "0")
    workspace.write(with_logs(PROJECT.format(url="http://127.0.0.1:9"),
                              "    path: warehouse.duckdb\n"))
    project, out, seen = workspace.project, io.StringIO(), {}

    @op
    def sync_step(context):
        progress, observe, finish = observers(context, project, "contacts_identify",
                                              context.run_id)
        progress(0, 2)
        observe([("u1", "identify", "delivered", None), ("u2", "identify", "rejected", "400")])
        progress(2, 2)
        seen.update(finish())

    @job(logger_defs={"retl_progress": progress_logger(ProgressView(out, tty=False))})
    def run():
        sync_step()

    result = run.execute_in_process(instance=workspace.instance,
                                    run_config={"loggers": {"retl_progress": {}}})
    assert result.success
    assert seen == {"sync_log": "retl_state.retl_sync_log: 2 records"}
    assert sorted((r[2], r[4], r[6]) for r in duckdb_logs(workspace)) == [
        ("u1", "delivered", result.run_id), ("u2", "rejected", result.run_id)]
    assert out.getvalue().count("records answered") == 2
    warnings = [r for r in workspace.instance.all_logs(result.run_id)
                if r.dagster_event is None and r.level >= logging.WARNING]
    assert warnings == []
    assert not any(e.event_type == DagsterEventType.STEP_FAILURE
                   for e in result.all_events)


def test_retl_sync_shows_the_rows_it_extracted(workspace):
    out = io.StringIO()
    run = workspace.sync(progress=ProgressView(out, tty=False))
    assert run.status == "success", run.errors
    assert out.getvalue().splitlines()[0] == "model contacts: 300 rows extracted"


def test_retl_sync_prints_plain_progress_lines_when_not_a_terminal(workspace, emulator):
    (workspace.root / "retl.yaml").write_text((workspace.root / "retl.yaml").read_text().replace(
        "max_retries: 8", "max_retries: 8\n    batch_size: 20\n    max_concurrency: 1"))
    emulator.set_faults(latency_ms=100)  # 15 requests of 20 records: about 1.5 s of sending
    code, out, err = run_retl(workspace, "sync", "contacts",
                              env={"RETL_PROGRESS_EVERY_S": "0.1"})
    assert code == 0, err
    assert "model contacts: success" in out  # progress goes to stderr only
    assert "model contacts: 300 rows extracted" in err.splitlines()
    lines = [line for line in err.splitlines() if "contacts_identify" in line]
    assert len(lines) >= 2, err
    assert lines[-1].startswith("sync contacts_identify: 300/300 records answered (100%)")
    assert "\r" not in err


def test_json_output_has_no_progress_lines(workspace, emulator):
    code, out, err = run_retl(workspace, "sync", "contacts", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "success"
    assert "records answered" not in err and "rows extracted" not in err
