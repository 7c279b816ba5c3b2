"""retl: Reverse ETL as Dagster assets.

The public surface: turn a project file into Dagster definitions, or load it as a component.
"""

from retl_assets.assets import (
    RetlAssetData,
    RetlTranslator,
    build_retl_definitions,
    build_retl_specs,
)
from retl_assets.component import RetlProjectComponent
from retl_assets.errors import (
    AuthError,
    DestinationError,
    LeaseHeldError,
    ModelError,
    ProjectError,
    RetlError,
    SetupError,
    SourceError,
    UnreachableError,
)
from retl_assets.project import Project, load_project

__all__ = [
    "AuthError",
    "DestinationError",
    "LeaseHeldError",
    "ModelError",
    "Project",
    "ProjectError",
    "RetlAssetData",
    "RetlError",
    "RetlProjectComponent",
    "RetlTranslator",
    "SetupError",
    "SourceError",
    "UnreachableError",
    "build_retl_definitions",
    "build_retl_specs",
    "load_project",
]
