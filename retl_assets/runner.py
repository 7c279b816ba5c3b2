"""Run a model's job now, on the Dagster instance, and read back what happened."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, EventLogEntry, RunRecord

from retl_assets.assets import build_retl_definitions, job_name
from retl_assets.assets.runtime import ALLOW_MASS_DELETE_TAG, FULL_RESYNC_TAG, MODEL_TAG
from retl_assets.automation import current_partition, partitions_for
from retl_assets.errors import ProjectError
from retl_assets.progress import ProgressView, progress_logger
from retl_assets.project import Project

MINIMAL_INSTANCE = "telemetry:\n  enabled: false\n"
STEP_KEY = re.compile(r"retl_(model|diff|sync)__(.+)")


def ensure_dagster_home(project: Project) -> Path:
    """DAGSTER_HOME if set; else this folder if it holds a dagster.yaml; else one beside the
    project, so runs started here show in `dagster dev` pointed at the same folder."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        here = Path.cwd()
        if (here / "dagster.yaml").exists():
            home = str(here)
        else:
            path = project.root / ".retl" / "dagster"
            path.mkdir(parents=True, exist_ok=True)
            if not (path / "dagster.yaml").exists():
                (path / "dagster.yaml").write_text(MINIMAL_INSTANCE)
            home = str(path)
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return Path(home)


# What a sync's materialisation (or the Failure its step raises) says of its delivery.
SYNC_COUNTS = ("sent", "succeeded", "failed", "rejected", "invalid", "unsent", "unconfirmed",
               "skipped", "owed", "retries", "duration_s", "records_per_s")
# The only events a summary reads: a run's other events (logs, handled outputs) can be many.
SUMMARY_EVENTS = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION,
                  DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_SKIPPED}


@dataclass
class RunSummary:
    model: str
    run_id: str
    status: str  # success | failure | started | queued | canceled | ... (Dagster's, lower case)
    partition: str | None
    rows: int | None = None
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    # sync -> SYNC_COUNTS plus status (success | failure); a count is None where unknown
    # (a sync that failed before it could say what it owes)
    syncs: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # asset check name -> passed
    errors: list[str] = field(default_factory=list)
    skipped_syncs: list[str] = field(default_factory=list)  # planned, not run (upstream failed)
    started_at: float | None = None  # Unix seconds
    ended_at: float | None = None
    job: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round(self.ended_at - self.started_at, 3)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "duration_s": self.duration_s}


def sync_model(project: Project, model: str, *, full_resync: bool = False,
               allow_mass_delete: bool = False, instance: DagsterInstance | None = None,
               log_level: str = "DEBUG", assets: list[str] | None = None,
               progress: ProgressView | None = None) -> RunSummary:
    """Run the model's job; `assets` (keys such as "diffs/contacts") runs only those;
    `progress` shows the run's progress lines as they come (a bar on a terminal)."""
    if model not in project.models:
        raise ProjectError(f"no model named {model!r} (models: {', '.join(project.models)})")
    defs = build_retl_definitions(project)
    job = defs.resolve_job_def(job_name(model))
    partition = current_partition(partitions_for(project.models[model]))
    tags = {MODEL_TAG: model, "retl/trigger": "cli"}
    if full_resync:
        tags[FULL_RESYNC_TAG] = "true"
    if allow_mass_delete:
        tags[ALLOW_MASS_DELETE_TAG] = "true"
    if instance is None:
        ensure_dagster_home(project)
        instance = DagsterInstance.get()
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if progress is not None:
        job = job.with_logger_defs({**job.loggers, "retl_progress": progress_logger(progress)})
        run_config["loggers"]["retl_progress"] = {}
    selection = [AssetKey.from_user_string(a) for a in assets] if assets else None
    result = job.execute_in_process(run_config=run_config, instance=instance,
                                    partition_key=partition, tags=tags, raise_on_error=False,
                                    asset_selection=selection)
    if progress is not None:
        progress.close()
    return summarize(instance, model, result.run_id, partition,
                     syncs=set(project.syncs_of(model)))


def summarize(instance: DagsterInstance, model: str, run_id: str,
              partition: str | None = None, *, syncs: Collection[str] | None = None,
              events: list[EventLogEntry] | None = None,
              record: RunRecord | None = None) -> RunSummary:
    """What one run did for `model`: its counts, its syncs' deliveries, checks and errors.

    `syncs`: the model's syncs, so a run of several models reports only this one's (None:
    every sync the run delivered). `events`, `record`: the run's SUMMARY_EVENTS and its run
    record, when already read."""
    record = record or instance.get_run_record_by_id(run_id)
    run = record.dagster_run if record else None
    status = "success" if run and run.status.value == "SUCCESS" else "failure"
    summary = RunSummary(model, run_id, status, partition,
                         started_at=record.start_time if record else None,
                         ended_at=record.end_time if record else None,
                         job=run.job_name if run else None)
    if events is None:
        events = run_events(instance, run_id)
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        kind, name = step_of(event)
        if kind == "sync" and syncs is not None and name not in syncs:
            continue
        if kind in ("model", "diff") and name != model:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            meta = _values(event.event_specific_data.materialization.metadata)
            if kind == "diff":
                summary.rows = meta.get("rows")
                for k in ("added", "updated", "deleted", "unchanged"):
                    setattr(summary, k, int(meta.get(k, 0)))
            elif kind == "sync":
                summary.syncs[name] = {**{k: meta.get(k) for k in SYNC_COUNTS},
                                       "status": "success"}
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            summary.checks[check.check_name] = check.passed
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            summary.errors.append(f"{event.step_key}: {_root_message(data.error)}")
            if kind == "sync":
                # The Failure a stopped sync raises says what it owes; without it the counts
                # are unknown (None), never 0. A materialisation before the failure stays.
                told = _values(data.user_failure_data.metadata) if data.user_failure_data else {}
                before = summary.syncs.get(name) or dict.fromkeys(SYNC_COUNTS)
                summary.syncs[name] = {**before, **{k: told[k] for k in SYNC_COUNTS if k in told},
                                       "status": "failure"}
        elif event.event_type == DagsterEventType.STEP_SKIPPED and kind == "sync":
            summary.skipped_syncs.append(name)
    return summary


def run_events(instance: DagsterInstance, run_id: str) -> list[EventLogEntry]:
    """The run's SUMMARY_EVENTS, one indexed query."""
    connection = instance.get_records_for_run(run_id, of_type=SUMMARY_EVENTS)
    return [r.event_log_entry for r in connection.records]


def step_of(event: Any) -> tuple[str | None, str | None]:
    """(model | diff | sync, name) of a retl step, from its op name `retl_<kind>__<name>`,
    which a translator's renamed asset keys leave as it is; (None, None) for another step."""
    match = STEP_KEY.fullmatch(event.step_key or "")
    return (match.group(1), match.group(2)) if match else (None, None)


def _values(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in (metadata or {}).items()}


def _root_message(error) -> str:
    # Dagster wraps user errors; the innermost cause holds retl's own message.
    while error is not None and error.cause is not None:
        error = error.cause
    text = (error.message if error else "").strip()
    # "retl_assets.errors.ModelError: message": keep the message (a bare name stays whole).
    if text.startswith(("retl_assets.", "dagster.")) and ": " in text:
        return text.split(": ", 1)[1]
    return text
