"""Each model's schedule, cut into time-window partitions: one partition per tick.

A partition of `diffs/M` or `syncs/S` is not data of its own time window: every run diffs
the model's current rows against the committed base and sends what changed. So the windows
say *when* a run synced, not *what*, and an old window can never be filled in afterwards.
Two consequences:

- The partitions start at the model's first committed run (the window it synced, read from
  the state store's log), or, before any run, at the current tick (models on one cadence
  share the earliest such start). The UI then shows the
  partitions retl has actually been running, not ~32,000 "missing" ones since
  `Schedule.start`, and offers no meaningless backfill.
- A backfill run (Dagster's `dagster/backfill` tag) of any partition but the current one is
  refused by `refuse_backfill` before it reads or sends anything: it would sync today's rows
  under an old label. Materialising the current partition (or `retl sync`) is the way.
"""

from __future__ import annotations

from datetime import datetime, timezone

from dagster import TimeWindowPartitionsDefinition

from retl_assets.errors import ModelError
from retl_assets.project import Model, Project
from retl_assets.state.store import StateStore

FMT = "%Y-%m-%d-%H:%M"
BACKFILL_TAG = "dagster/backfill"


def partitions_for(model: Model, start: datetime | None = None
                   ) -> TimeWindowPartitionsDefinition | None:
    """The model's partitions from `start` (default `Schedule.start`, which names the same
    keys, enough to compute a run's partition)."""
    schedule = model.config.schedule
    if schedule is None:
        return None
    return TimeWindowPartitionsDefinition(
        cron_schedule=schedule.to_cron(),
        start=start or datetime.fromisoformat(schedule.start),
        timezone=schedule.timezone, fmt=FMT)


def project_partitions(project: Project, store: StateStore, now: datetime | None = None
                       ) -> dict[str, TimeWindowPartitionsDefinition | None]:
    """Each model's partitions, starting where retl began syncing (see the module docstring).

    Models on the same cadence share one start, the earliest of theirs, so their partitions
    are the same and `dagster asset materialize` can select several at once."""
    first: dict[tuple[str, str], datetime] = {}
    for name, model in project.models.items():
        parts = partitions_for(model)
        if parts is None:
            continue
        began = first_synced(store, name, parts) or current_partition(parts, now)
        if began is None:  # before Schedule.start: keep it
            continue
        when = datetime.strptime(began, FMT)
        cadence = (parts.cron_schedule, parts.timezone)
        first[cadence] = min(first.get(cadence, when), when)
    out: dict[str, TimeWindowPartitionsDefinition | None] = {}
    for name, model in project.models.items():
        parts = partitions_for(model)
        out[name] = parts if parts is None else partitions_for(
            model, first.get((parts.cron_schedule, parts.timezone)))
    return out


def first_synced(store: StateStore, model: str,
                 parts: TimeWindowPartitionsDefinition) -> str | None:
    """The partition of the model's first committed changeset, or None before any."""
    first = store.log_manifest(model, 1)
    if not first:
        return None
    if first.get("partition"):
        return str(first["partition"])
    when = first.get("created_at")
    return current_partition(parts, datetime.fromtimestamp(when, timezone.utc)) if when else None


def current_partition(partitions: TimeWindowPartitionsDefinition | None,
                      now: datetime | None = None) -> str | None:
    """The partition of the tick that has just passed: what a run now syncs."""
    if partitions is None:
        return None
    window = partitions.get_prev_partition_window(now or datetime.now(timezone.utc))
    return window.start.strftime(partitions.fmt) if window else None


def refuse_backfill(model: Model, partition: str | None, tags: dict[str, str],
                    now: datetime | None = None) -> None:
    """A backfill run may only sync the current partition; see the module's docstring."""
    if BACKFILL_TAG not in tags or partition is None:
        return
    current = current_partition(partitions_for(model), now)
    if partition == current:
        return
    raise ModelError(
        f"model {model.name!r}: backfill {tags[BACKFILL_TAG]} asks for partition {partition}, "
        f"but a retl partition is the tick a run synced, not data of its own: a run now "
        f"would send today's changes under an old label. Nothing was run. Materialise the "
        f"current partition ({current}) instead, or run `retl sync {model.name}`")
