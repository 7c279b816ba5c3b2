"""Schedules and sensors that run a model's job, skipping while a run of it is in progress."""

from __future__ import annotations

import json
from collections.abc import Callable

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from retl_assets.automation.partitions import current_partition, partitions_for
from retl_assets.errors import ProjectError
from retl_assets.project import Model

MODEL_TAG = "retl/model"  # which model(s) a run runs: set by its trigger or its first step

IN_PROGRESS = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
]


def run_in_progress(instance: DagsterInstance, job_name: str,
                    model: str | None = None) -> str | None:
    """Why a new run must wait, or None: a run of the model's job, or any other run (the
    UI's Materialize button, `dagster asset materialize`) whose `retl/model` tag names it
    (`a,b` when it runs several models)."""
    runs = instance.get_runs(RunsFilter(job_name=job_name, statuses=IN_PROGRESS), limit=1)
    if not runs and model is not None:
        runs = [r for r in instance.get_runs(RunsFilter(statuses=IN_PROGRESS), limit=100)
                if model in r.tags.get(MODEL_TAG, "").split(",")][:1]
    if not runs:
        return None
    run = runs[0]
    return f"run {run.run_id} of {run.job_name} is still {run.status.value.lower()}"


def model_schedule(model: Model, job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    schedule = model.config.schedule
    if schedule is None:
        raise ProjectError(f"models.{model.name}.schedule: the model has none to build")

    def evaluate(context: ScheduleEvaluationContext):
        busy = run_in_progress(context.instance, job.name, model.name)
        if busy:
            return SkipReason(f"model {model.name}: skipping this tick, {busy}")
        when = context.scheduled_execution_time
        return RunRequest(partition_key=current_partition(partitions_for(model), when),
                          tags={MODEL_TAG: model.name, "retl/trigger": "schedule"})

    return ScheduleDefinition(
        name=f"retl_{model.name}_schedule", cron_schedule=schedule.to_cron(), job=job,
        execution_timezone=schedule.timezone, execution_fn=evaluate,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Sync model {model.name} on its schedule",
    )


def model_trigger(model: Model, job: UnresolvedAssetJobDefinition) -> SensorDefinition:
    trigger = model.config.trigger
    if trigger is None:
        raise ProjectError(f"models.{model.name}.trigger: the model has none to build")
    upstream = AssetKey(trigger.asset_path())

    @sensor(name=f"retl_{model.name}_trigger", job=job, minimum_interval_seconds=30,
            default_status=DefaultSensorStatus.STOPPED,
            description=f"Sync model {model.name} when {upstream.to_user_string()} materialises")
    def _trigger(context: SensorEvaluationContext):
        records = context.instance.fetch_materializations(upstream, limit=1).records
        if not records:
            return SkipReason(f"{upstream.to_user_string()} has not materialised yet")
        latest = records[0].storage_id
        if latest <= int(context.cursor or 0):
            return SkipReason(f"no new materialisation of {upstream.to_user_string()}")
        busy = run_in_progress(context.instance, job.name, model.name)
        if busy:
            # The cursor stays put, so the materialisation is picked up once the run ends.
            return SkipReason(f"model {model.name}: waiting, {busy}")
        context.update_cursor(str(latest))
        return RunRequest(run_key=f"{model.name}-{latest}",
                          partition_key=current_partition(partitions_for(model)),
                          tags={MODEL_TAG: model.name, "retl/trigger": "asset"})

    return _trigger


def model_source_changed(model: Model, job: UnresolvedAssetJobDefinition,
                         marker: Callable[[], str]) -> SensorDefinition:
    """Run the model when `marker()` (see automation.changes) differs from the one its last
    run saw. The cursor keeps that marker and the run asked for; a marker is only consumed
    once a run has been requested for it, and a failed run is asked for again."""
    trigger = model.config.trigger
    changed = trigger.source_changed if trigger else None
    if changed is None:
        raise ProjectError(f"models.{model.name}.trigger.source_changed: the model has none")

    @sensor(name=f"retl_{model.name}_source_changed", job=job,
            minimum_interval_seconds=changed.seconds, default_status=DefaultSensorStatus.STOPPED,
            description=f"Sync model {model.name} when the tables it reads change "
                        f"(checked every {changed.every})")
    def _source_changed(context: SensorEvaluationContext):
        busy = run_in_progress(context.instance, job.name, model.name)
        if busy:
            return SkipReason(f"model {model.name}: not checking the source, {busy}")
        seen = json.loads(context.cursor) if context.cursor else {}
        now = marker()
        if now == seen.get("marker"):
            if not _failed(context.instance, seen.get("run_key")):
                return SkipReason(f"model {model.name}: the tables it reads are unchanged")
            why, attempt = "its last run failed", int(seen.get("attempt", 0)) + 1
        else:
            why = "the tables it reads changed" if seen else "first check of its source"
            attempt = 0
        run_key = f"{model.name}-{now}-{attempt}"
        context.update_cursor(json.dumps({"marker": now, "run_key": run_key,
                                          "attempt": attempt}))
        return RunRequest(run_key=run_key, partition_key=current_partition(partitions_for(model)),
                          tags={MODEL_TAG: model.name, "retl/trigger": "source_changed",
                                "retl/why": why})

    return _source_changed


def _failed(instance: DagsterInstance, run_key: str | None) -> bool:
    if not run_key:
        return False
    runs = instance.get_runs(RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return bool(runs) and runs[0].status == DagsterRunStatus.FAILURE
