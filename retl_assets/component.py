"""Load a retl project file inside an existing `dg` project.

    # defs/retl/defs.yaml
    type: retl_assets.RetlProjectComponent
    attributes:
      project_file: retl.yaml   # relative to this folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dagster import Component, ComponentLoadContext, Definitions, Resolvable

from retl_assets.assets import build_retl_definitions
from retl_assets.project import load_project


@dataclass
class RetlProjectComponent(Component, Resolvable):
    """Every model, diff and sync of a retl project file, with their jobs and schedules."""

    project_file: str = "retl.yaml"

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        path = Path(self.project_file)
        if not path.is_absolute():
            path = context.path / path
        return build_retl_definitions(load_project(path))
