"""Cadence: partitions from schedules, schedules and sensors that skip while a run is going."""

from retl_assets.automation.partitions import current_partition, partitions_for
from retl_assets.automation.triggers import (
    model_schedule,
    model_source_changed,
    model_trigger,
    run_in_progress,
)

__all__ = ["current_partition", "model_schedule", "model_source_changed", "model_trigger",
           "partitions_for", "run_in_progress"]
