"""What every retl step reads from its run: tags, the start time, and the model's lease."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, DagsterRunStatus

from retl_assets.state.lease import Held
from retl_assets.state.store import StateStore

FULL_RESYNC_TAG = "retl/full_resync"
ALLOW_MASS_DELETE_TAG = "retl/allow_mass_delete"
MODEL_TAG = "retl/model"
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
