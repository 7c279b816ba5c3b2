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
from retl_assets.destinations.registry import module

if TYPE_CHECKING:
    from retl_assets.project import Project


def open_destination(project: Project, name: str) -> Destination:
    config = project.config.destinations[name]
    m = module(config.type)
    assert m is not None  # the project loader checked the type
    return m.connect(name, config)


__all__ = ["Answer", "Capabilities", "Destination", "Outcome", "Record", "Report", "Writer",
           "deliver", "open_destination"]
