"""Run a model's job now, on the Dagster instance, and read back what happened."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, RunsFilter

from retl_assets.assets import build_retl_definitions, job_name
from retl_assets.assets.runtime import ALLOW_MASS_DELETE_TAG, FULL_RESYNC_TAG, MODEL_TAG
from retl_assets.automation import current_partition, partitions_for
from retl_assets.errors import ProjectError
from retl_assets.project import Project

MINIMAL_INSTANCE = "telemetry:\n  enabled: false\n"


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


@dataclass
class RunSummary:
    model: str
    run_id: str
    status: str  # success | failure
    partition: str | None
    rows: int | None = None
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    syncs: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # asset check name -> passed
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sync_model(project: Project, model: str, *, full_resync: bool = False,
               allow_mass_delete: bool = False, instance: DagsterInstance | None = None,
               log_level: str = "DEBUG", assets: list[str] | None = None) -> RunSummary:
    """Run the model's job; `assets` (keys such as "diffs/contacts") runs only those."""
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
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    selection = [AssetKey.from_user_string(a) for a in assets] if assets else None
    result = job.execute_in_process(run_config=run_config, instance=instance,
                                    partition_key=partition, tags=tags, raise_on_error=False,
                                    asset_selection=selection)
    return summarize(instance, model, result.run_id, partition)


def summarize(instance: DagsterInstance, model: str, run_id: str,
              partition: str | None = None) -> RunSummary:
    run = instance.get_run_by_id(run_id)
    status = "success" if run and run.status.value == "SUCCESS" else "failure"
    summary = RunSummary(model, run_id, status, partition)
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
            kind, name = mat.asset_key.path[0], mat.asset_key.path[-1]
            if kind == "diffs":
                summary.rows = meta.get("rows")
                for k in ("added", "updated", "deleted", "unchanged"):
                    setattr(summary, k, int(meta.get(k, 0)))
            elif kind == "syncs":
                summary.syncs[name] = {k: meta.get(k) for k in (
                    "sent", "succeeded", "failed", "rejected", "invalid", "unsent", "unconfirmed",
                    "skipped",
                    "owed",
                    "duration_s", "records_per_s")}
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            summary.checks[check.check_name] = check.passed
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            message = _root_message(error)
            summary.errors.append(f"{event.step_key}: {message}")
    return summary


def _root_message(error) -> str:
    # Dagster wraps user errors; the innermost cause holds retl's own message.
    while error is not None and error.cause is not None:
        error = error.cause
    text = (error.message if error else "").strip()
    return text.split(": ", 1)[1] if text.startswith(("retl_assets.", "dagster.")) else text


def recent_runs(instance: DagsterInstance, project: Project, limit: int = 20) -> list[RunSummary]:
    names = {job_name(m): m for m in project.models}
    runs = instance.get_runs(RunsFilter(job_name=None), limit=limit * 5)
    out = []
    for run in runs:
        if run.job_name in names:
            summary = summarize(instance, names[run.job_name], run.run_id,
                                run.tags.get("dagster/partition"))
            summary.status = run.status.value.lower()
            out.append(summary)
        if len(out) >= limit:
            break
    return out
