"""Schedules and sensors run a model, and skip while a run of it is still going."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterRunStatus,
    RunsFilter,
    build_schedule_context,
    build_sensor_context,
)

from retl_assets.assets import build_retl_definitions
from retl_assets.automation import current_partition, partitions_for
from retl_assets.project.schema import Schedule
from retl_assets_tests.test_cli import run_retl


def slow_run_in_background(ws, emulator, batch: int = 50, latency_ms: float = 400):
    """Start a real sync that takes a few seconds; return the thread once it is running."""
    (ws.root / "retl.yaml").write_text((ws.root / "retl.yaml").read_text().replace(
        "max_retries: 8", f"max_retries: 8\n    batch_size: {batch}\n    max_concurrency: 1"))
    emulator.set_faults(latency_ms=latency_ms)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", ws.sync()))
    thread.start()
    deadline = time.time() + 30
    while time.time() < deadline:
        runs = ws.instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        if runs and emulator.state()["stats"]["requests"] > 0:
            return thread, result
        time.sleep(0.05)
    raise AssertionError("the run never started")


def test_schedule_skips_while_a_run_is_in_progress_and_runs_otherwise(workspace, emulator):
    defs = build_retl_definitions(workspace.project)
    schedule = defs.get_schedule_def("retl_contacts_schedule")
    # A tick since the model's partitions began (they start at its first run, or now).
    tick = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    expected = current_partition(partitions_for(workspace.project.models["contacts"]), tick)

    # 30 requests of 1 s: the run lasts until the latency is dropped below.
    thread, result = slow_run_in_background(workspace, emulator, batch=10, latency_ms=1000)
    busy = schedule.evaluate_tick(build_schedule_context(
        instance=workspace.instance, scheduled_execution_time=tick,
        repository_def=defs.get_repository_def()))
    # A second run started by hand meanwhile, in its own process as a user's would be, is
    # refused at once, naming the holder. (Not a second in-process run in another thread:
    # Dagster reconfigures `logging` at each run's start, which can deadlock the first.)
    code, out, err = run_retl(workspace, "sync", "contacts", "--json")
    emulator.set_faults(latency_ms=0)
    thread.join(timeout=300)
    assert not thread.is_alive(), "the background run did not finish"
    assert busy.run_requests == [] or busy.run_requests is None
    assert "skipping this tick" in busy.skip_message and "still started" in busy.skip_message
    assert code == 1 and json.loads(out)["status"] == "failure", err
    assert any("is being synced by run" in e for e in json.loads(out)["errors"]), out
    assert result["run"].status == "success"

    free = schedule.evaluate_tick(build_schedule_context(
        instance=workspace.instance, scheduled_execution_time=tick,
        repository_def=defs.get_repository_def()))
    assert len(free.run_requests) == 1
    assert free.run_requests[0].partition_key == expected


def test_schedule_skips_while_an_asset_selection_run_of_the_model_is_going(workspace, emulator):
    """The UI's Materialize button runs __ASSET_JOB, not the model's job: its `retl/model`
    tag (set by its first step) is what the schedule sees."""
    (workspace.root / "retl.yaml").write_text((workspace.root / "retl.yaml").read_text().replace(
        "max_retries: 8", "max_retries: 8\n    batch_size: 50\n    max_concurrency: 1"))
    emulator.set_faults(latency_ms=400)
    defs = build_retl_definitions(workspace.project)
    schedule = defs.get_schedule_def("retl_contacts_schedule")
    tick = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    partition = current_partition(partitions_for(workspace.project.models["contacts"]), tick)
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [AssetKey(["models", "contacts"]), AssetKey(["diffs", "contacts"]),
            AssetKey(["syncs", "contacts_identify"])]
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", job.execute_in_process(
        instance=workspace.instance, asset_selection=keys, partition_key=partition,
        raise_on_error=False)))
    thread.start()
    try:
        deadline = time.time() + 30
        while emulator.state()["stats"]["requests"] == 0 and time.time() < deadline:
            time.sleep(0.05)
        busy = schedule.evaluate_tick(build_schedule_context(
            instance=workspace.instance, scheduled_execution_time=tick,
            repository_def=defs.get_repository_def()))
    finally:
        thread.join(timeout=300)
    assert result["run"].success
    assert not busy.run_requests
    assert "__ASSET_JOB" in busy.skip_message and "still started" in busy.skip_message


def test_trigger_sensor_waits_for_the_run_then_fires(workspace, emulator):
    text = (workspace.root / "retl.yaml").read_text().replace(
        "schedule: {every: 15m}", "schedule: {every: 15m}\n    trigger: {asset: raw/contacts}")
    (workspace.root / "retl.yaml").write_text(text)
    defs = build_retl_definitions(workspace.project)
    sensor = defs.get_sensor_def("retl_contacts_trigger")
    nothing = sensor.evaluate_tick(build_sensor_context(repository_def=defs.get_repository_def(), instance=workspace.instance))
    assert "has not materialised yet" in nothing.skip_message

    workspace.instance.report_runless_asset_event(AssetMaterialization(AssetKey(["raw", "contacts"])))
    thread, _ = slow_run_in_background(workspace, emulator)
    waiting = sensor.evaluate_tick(build_sensor_context(repository_def=defs.get_repository_def(), instance=workspace.instance, cursor="0"))
    thread.join(timeout=300)
    assert not thread.is_alive(), "the background run did not finish"
    assert "waiting" in waiting.skip_message and waiting.cursor in (None, "0")

    fired = sensor.evaluate_tick(build_sensor_context(repository_def=defs.get_repository_def(), instance=workspace.instance, cursor="0"))
    assert len(fired.run_requests) == 1 and int(fired.cursor) > 0
    again = sensor.evaluate_tick(build_sensor_context(repository_def=defs.get_repository_def(), instance=workspace.instance,
                                                      cursor=fired.cursor))
    assert "no new materialisation" in again.skip_message


def test_schedules_become_crons():
    assert Schedule(every="15m").to_cron() == "*/15 * * * *"
    assert Schedule(every="1h").to_cron() == "0 * * * *"
    assert Schedule(every="6h").to_cron() == "0 */6 * * *"
    assert Schedule(every="1d").to_cron() == "0 0 * * *"
    assert Schedule(cron="0 9 * * 1-5").to_cron() == "0 9 * * 1-5"
    assert Schedule(days=["mon", "thu"], at="09:30").to_cron() == "30 9 * * 1,4"


WATCHED = ("schedule: {every: 15m}",
           "trigger: {source_changed: {every: 1m, fingerprint: "
           "'SELECT max(updated_at), count(*) FROM contacts'}}")


def _tick(sensor, defs, ws, cursor=None):
    return sensor.evaluate_tick(build_sensor_context(
        repository_def=defs.get_repository_def(), instance=ws.instance, cursor=cursor))


def test_source_changed_sensor_runs_only_when_the_data_changed(workspace, emulator):
    from dagster._core.test_utils import create_run_for_test

    workspace.write((workspace.root / "retl.yaml").read_text().replace(*WATCHED))
    defs = build_retl_definitions(workspace.project)
    sensor = defs.get_sensor_def("retl_contacts_source_changed")
    assert sensor.minimum_interval_seconds == 60

    first = _tick(sensor, defs, workspace)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags["retl/why"] == "first check of its source"
    same = _tick(sensor, defs, workspace, first.cursor)
    assert not same.run_requests and "unchanged" in same.skip_message

    workspace.sql("UPDATE contacts SET updated_at = TIMESTAMP '2027-01-01' WHERE id = 'u000001'")
    changed = _tick(sensor, defs, workspace, first.cursor)
    assert len(changed.run_requests) == 1
    assert changed.run_requests[0].tags["retl/why"] == "the tables it reads changed"

    # The run asked for failed: the same data is asked for again, under a new run key.
    key = changed.run_requests[0].run_key
    create_run_for_test(workspace.instance, job_name="other", tags={"dagster/run_key": key},
                        status=DagsterRunStatus.FAILURE)
    retry = _tick(sensor, defs, workspace, changed.cursor)
    assert len(retry.run_requests) == 1 and retry.run_requests[0].run_key != key
    assert retry.run_requests[0].tags["retl/why"] == "its last run failed"

    thread, _ = slow_run_in_background(workspace, emulator)
    busy = _tick(sensor, defs, workspace, retry.cursor)
    thread.join(timeout=300)
    assert not thread.is_alive(), "the background run did not finish"
    assert not busy.run_requests and "not checking the source" in busy.skip_message


def test_a_source_changed_trigger_needs_a_fingerprint_where_the_warehouse_has_no_marker(
        workspace):
    import pytest

    from retl_assets.errors import ProjectError

    text = (workspace.root / "retl.yaml").read_text()
    workspace.write(text.replace("schedule: {every: 15m}",
                                 "trigger: {source_changed: {every: 5m}}"))
    with pytest.raises(ProjectError, match="trigger.source_changed.fingerprint: duckdb cannot"):
        workspace.project
    workspace.write(text.replace("schedule: {every: 15m}", "trigger: {source_changed: "
                                 "{fingerprint: 'DELETE FROM contacts RETURNING 1'}}"))
    with pytest.raises(ProjectError, match="fingerprint: its SQL contains DELETE"):
        workspace.project
    workspace.write(text.replace("schedule: {every: 15m}",
                                 "trigger: {source_changed: {every: 5s, fingerprint: 'SELECT 1'}}"))
    with pytest.raises(ProjectError, match="at least 30s"):
        workspace.project
