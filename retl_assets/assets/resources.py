"""The Dagster resources retl's assets take: the state store, the sources, the destinations.

They are built once, in the Definitions, from the project file. They hold only paths, names
and URLs: a source's or destination's credentials are read from the environment when a run
opens it, so neither the UI nor run storage ever sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dagster import ConfigurableResource, ResourceDefinition

from retl_assets.destinations import Destination, open_destination
from retl_assets.project import Project
from retl_assets.sources import Source, open_source
from retl_assets.state.store import StateStore

# Resource keys; each asset body takes its resources as parameters of these names.
STATE = "retl_state"
SOURCES = "retl_sources"
DESTINATIONS = "retl_destinations"


class RetlStateStore(ConfigurableResource):
    """Where retl keeps snapshots, changesets, ledgers and leases: a folder."""

    root: str

    def open(self) -> StateStore:
        return StateStore(Path(self.root))


@dataclass(frozen=True)
class RetlSources:
    """The project's warehouses, opened by name when a model runs."""

    project: Project

    def open(self, name: str) -> Source:
        return open_source(self.project, name)


@dataclass(frozen=True)
class RetlDestinations:
    """The project's destinations, opened by name when a sync runs."""

    project: Project

    def open(self, name: str) -> Destination:
        return open_destination(self.project, name)


def retl_resources(project: Project) -> dict[str, ResourceDefinition | ConfigurableResource]:
    """The state store as config (a path, shown in the UI); sources and destinations as plain
    resources with no config at all, so a literal secret in the project file cannot leak."""
    config = project.config
    return {
        STATE: RetlStateStore(root=str(project.state_dir)),
        SOURCES: ResourceDefinition.hardcoded_resource(
            RetlSources(project), _listing("Warehouses", config.sources)),
        DESTINATIONS: ResourceDefinition.hardcoded_resource(
            RetlDestinations(project), _listing("Destinations", config.destinations)),
    }


def _listing(what: str, entries: dict) -> str:
    names = ", ".join(f"{name} ({entry.type})" for name, entry in entries.items()) or "none"
    return (f"{what} of the retl project: {names}. "
            "Credentials are read from the environment at run time.")
