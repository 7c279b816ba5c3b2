"""Destinations: one module per protocol, on the shared delivery engine."""

from __future__ import annotations

from retl_assets.destinations.base import Answer, Capabilities, Destination, Record
from retl_assets.destinations.delivery import Outcome, Report, deliver
from retl_assets.destinations.segment import SegmentDestination
from retl_assets.project import Project, resolve_secret


def open_destination(project: Project, name: str) -> Destination:
    config = project.config.destinations[name]
    key = resolve_secret(config.write_key, f"destinations.{name}.write_key")
    return SegmentDestination(name, config.type, key or "", config.base_url,
                              config.max_concurrency, config.batch_size)


__all__ = ["Answer", "Capabilities", "Destination", "Outcome", "Record", "Report",
           "SegmentDestination", "deliver", "open_destination"]
