"""Each model's schedule, cut into time-window partitions: one partition per tick."""

from __future__ import annotations

from datetime import datetime, timezone

from dagster import TimeWindowPartitionsDefinition

from retl_assets.project import Model


def partitions_for(model: Model) -> TimeWindowPartitionsDefinition | None:
    schedule = model.config.schedule
    if schedule is None:
        return None
    return TimeWindowPartitionsDefinition(
        cron_schedule=schedule.to_cron(),
        start=datetime.fromisoformat(schedule.start),
        timezone=schedule.timezone,
        fmt="%Y-%m-%d-%H:%M",
    )


def current_partition(partitions: TimeWindowPartitionsDefinition | None,
                      now: datetime | None = None) -> str | None:
    """The partition of the tick that has just passed: what a run now syncs."""
    if partitions is None:
        return None
    window = partitions.get_prev_partition_window(now or datetime.now(timezone.utc))
    return window.start.strftime(partitions.fmt) if window else None
