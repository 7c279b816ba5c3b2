"""What every retl step reads from its run: tags, the start time, and the model's lease.

`retl_step` is how every retl step starts: it tags the run with the models it runs (a run of
Dagster's own `__ASSET_JOB`, from `dagster asset materialize` or the UI's Materialize button,
carries no `retl/model` tag of its own), refuses a backfill of a past partition, and holds
the model's lease for the step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, DagsterRunStatus

from retl_assets.automation.partitions import refuse_backfill
from retl_assets.automation.triggers import MODEL_TAG
from retl_assets.project import Project
from retl_assets.state.lease import Held
from retl_assets.state.store import StateStore

FULL_RESYNC_TAG = "retl/full_resync"
ALLOW_MASS_DELETE_TAG = "retl/allow_mass_delete"
ENDED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def tag_on(context: AssetExecutionContext, tag: str) -> bool:
    return str(context.run.tags.get(tag, "")).lower() in ("1", "true", "yes")


def run_started_at(context: AssetExecutionContext) -> float:
    record = context.instance.get_run_record_by_id(context.run.run_id)
    return (record.start_time if record and record.start_time else None) or time.time()


@contextmanager
def model_lease(context: AssetExecutionContext, store: StateStore,
                model: str) -> Iterator[StateStore]:
    """Hold the model's lease for this step; a live run of another holder stops us at once."""

    def active(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        # A run this instance doesn't know (another instance, or `retl` in-process) counts
        # as active until its lease expires.
        return run is None or run.status not in ENDED

    with Held(store.lease_path(model), model, context.run.run_id, active):
        yield store


# Every retl asset's op is named `retl_<kind>__<name>` (the translator cannot rename ops).
OP_PREFIXES = {"model": "retl_model__", "diff": "retl_diff__", "sync": "retl_sync__"}


def retl_ops_in_run(context: AssetExecutionContext) -> dict[str, set[str]]:
    """The models, diffs and syncs this run executes, by kind, from its job's ops (a subset
    job holds only the selected ones)."""
    found: dict[str, set[str]] = {kind: set() for kind in OP_PREFIXES}
    for node in context.job_def.graph.node_names():
        for kind, prefix in OP_PREFIXES.items():
            if node.startswith(prefix):
                found[kind].add(node.removeprefix(prefix))
    return found


def models_in_run(context: AssetExecutionContext, project: Project) -> list[str]:
    ops = retl_ops_in_run(context)
    models = ops["model"] | ops["diff"]
    models |= {project.config.syncs[s].model for s in ops["sync"] if s in project.config.syncs}
    return sorted(models)


@contextmanager
def retl_step(context: AssetExecutionContext, store: StateStore, project: Project,
              model: str) -> Iterator[StateStore]:
    """Start a retl step: tag the run, refuse a past backfill, hold the model's lease."""
    if MODEL_TAG not in context.run.tags:
        # Several models in one run: `retl/model: a,b`. The first step of the run sets it.
        names = models_in_run(context, project) or [model]
        context.instance.add_run_tags(context.run.run_id, {MODEL_TAG: ",".join(names)})
    partition = context.partition_key if context.has_partition_key else None
    refuse_backfill(project.models[model], partition, dict(context.run.tags))
    with model_lease(context, store, model) as held:
        yield held
