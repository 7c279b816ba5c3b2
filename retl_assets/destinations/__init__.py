"""Destinations: one module per protocol, on the shared delivery engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    Destination,
    Record,
    Writer,
)
from retl_assets.destinations.delivery import Outcome, Report, deliver
from retl_assets.errors import ProjectError
from retl_assets.vendors import destination

if TYPE_CHECKING:
    from retl_assets.project import Project


def open_destination(project: Project, name: str) -> Destination:
    config = project.config.destinations[name]
    facts = destination(config.type)
    if facts is None:  # the project loader refuses unknown types; a hand-built config may not
        raise ProjectError(f"destinations.{name}.type: unknown destination type {config.type!r}")
    return facts.connect(name, config)


__all__ = ["Answer", "Capabilities", "Destination", "Outcome", "Record", "Report", "Writer",
           "deliver", "open_destination"]
