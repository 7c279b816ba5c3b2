"""The one registry: each destination type -> the folder that speaks it.

A destination is its folder under `destinations/` (facts, config, writer), its emulator's
folder of the same name under `emulators/`, and one line here. The project loader, the CLI
and the emulator server all read this table; nothing else lists vendors.
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
    return list(DESTINATIONS)


def emulator(kind: str) -> ModuleType:
    """The emulator of a destination type: its module offers `make_app`."""
    return importlib.import_module(f"retl_assets.emulators.{DESTINATIONS[kind]}")
