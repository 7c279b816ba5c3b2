"""Warehouses behind one small interface: `open_source(project, name).stream(sql)`.

Each warehouse is a folder here (facts, config, source), registered in `retl_assets.vendors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retl_assets.sources.base import Check, Source, preview

if TYPE_CHECKING:
    from retl_assets.project import Project


def open_source(project: Project, name: str) -> Source:
    """The source as configured; its credentials are read from the environment now."""
    from retl_assets.vendors import source

    config = project.config.sources[name]
    return source(config.type).connect(name, config, project.root)


__all__ = ["Check", "Source", "open_source", "preview"]
