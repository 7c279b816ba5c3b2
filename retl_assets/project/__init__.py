"""The project file: typed schema, loading and clear errors."""

from retl_assets.project.load import Model, Project, load_project, project_path, resolve_secret
from retl_assets.project.schema import ModelConfig, ProjectConfig, SyncConfig

__all__ = [
    "Model",
    "ModelConfig",
    "Project",
    "ProjectConfig",
    "SyncConfig",
    "load_project",
    "project_path",
    "resolve_secret",
]
