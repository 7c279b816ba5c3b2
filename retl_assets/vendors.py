"""The one registry: each destination and source type -> the folder that speaks it.

A destination is its folder under `destinations/` (facts, config, writer), its emulator's
folder of the same name under `emulators/`, and one line here. A source (a warehouse) is its
folder under `sources/` (facts, config, source) and one line here; a warehouse with no local
engine has its API's emulator under `emulators/` too. The project loader, the CLI and the
emulator server all read these tables; nothing else lists vendors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Facts:
    """What retl knows of one destination type, as data. The project loader checks each
    sync against it; `connect` opens the destination (its credentials read then). Kept here,
    beside the registry, so the loader reads it without importing any destination."""

    config: type  # the destination's entry in the project file (a DestinationBase)
    connect: Callable[[str, Any], Any]  # (name, config) -> a Destination
    actions: tuple[str, ...]  # what a sync may ask for
    associations: bool = False  # links records to other objects' records (`associations`)


DESTINATIONS = {  # type: folder under destinations/ and emulators/
    "customerio": "segment",  # Customer.io Data Pipelines speaks Segment's protocol
    "segment": "segment",
    "hubspot": "hubspot",
    "salesforce": "salesforce",
    "braze": "braze",
    "iterable": "iterable",
    "mixpanel": "mixpanel",
    "clevertap": "clevertap",
    "clarify": "clarify",
    "conversion": "conversion",
    "webhook": "webhook",
}


def destination_types() -> list[str]:
    return list(DESTINATIONS)


def destination(kind: str | None) -> Facts | None:
    """What retl knows of a destination type; None for a type it does not know."""
    folder = DESTINATIONS.get(kind or "")
    if folder is None:
        return None
    return importlib.import_module(f"retl_assets.destinations.{folder}").FACTS[kind]


def emulator_types() -> list[str]:
    return list(DESTINATIONS) + list(WAREHOUSE_EMULATORS)


def emulator(kind: str) -> ModuleType:
    """The emulator of a destination or warehouse type: its module offers `make_app`."""
    folder = DESTINATIONS.get(kind) or WAREHOUSE_EMULATORS[kind]
    return importlib.import_module(f"retl_assets.emulators.{folder}")


# ------------------------------------------------------------------ sources


@dataclass(frozen=True)
class SourceFacts:
    """What retl knows of one warehouse type, as data, read without importing its driver."""

    config: type  # the source's entry in the project file (a SourceBase)
    connect: Callable[[str, Any, Any], Any]  # (name, config, project root) -> a Source
    dialect: str  # sqlglot's name for the warehouse's SQL
    tested: str  # how far retl's tests reach it, as README says
    read_only_session: bool = False  # the warehouse itself refuses writes in retl's session
    # How the warehouse says a table changed (its Source then offers `version(tables)`);
    # None: a `source_changed` trigger must name a fingerprint query.
    change_marker: str | None = None
    # Its Source offers `state_session(schema, model)`: `diff: in_warehouse` works on it.
    in_warehouse: bool = False


SOURCES = {  # type: folder under sources/
    "duckdb": "duckdb",
    "postgres": "postgres",
    "redshift": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "databricks": "databricks",
}

WAREHOUSE_EMULATORS = {  # warehouses without a local engine: the emulator of their API
    "bigquery": "bigquery",
    "databricks": "databricks",
}


def source_types() -> list[str]:
    return list(SOURCES)


def source(kind: str | None) -> SourceFacts | None:
    """What retl knows of a warehouse type; None for a type it does not know."""
    folder = SOURCES.get(kind or "")
    if folder is None:
        return None
    return importlib.import_module(f"retl_assets.sources.{folder}").FACTS
