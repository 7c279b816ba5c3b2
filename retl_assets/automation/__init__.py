"""Cadence: partitions from schedules, schedules and sensors that skip while a run is going;
and the alert sensor that watches how runs end."""

from retl_assets.automation.alerts import ALERT_SENSOR, SyncAsset, alert_sensor
from retl_assets.automation.partitions import (
    current_partition,
    partitions_for,
    project_partitions,
)
from retl_assets.automation.triggers import (
    model_schedule,
    model_source_changed,
    model_trigger,
    run_in_progress,
)

__all__ = ["ALERT_SENSOR", "SyncAsset", "alert_sensor", "current_partition", "model_schedule", "model_source_changed", "model_trigger",
           "partitions_for", "project_partitions", "run_in_progress"]
