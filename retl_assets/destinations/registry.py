"""Destination types -> the module that speaks each one. A new destination is a line here."""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "customerio": "segment",
    "segment": "segment",
    "hubspot": "hubspot",
}


def module(kind: str | None) -> ModuleType | None:
    name = MODULES.get(kind or "")
    return importlib.import_module(f"retl_assets.destinations.{name}") if name else None


def config_class(kind: str | None):
    m = module(kind)
    return m.CONFIGS[kind] if m else None


def actions(kind: str) -> tuple[str, ...]:
    m = module(kind)
    assert m is not None
    return m.ACTIONS[kind]
