"""Destination types -> the module that speaks each one. A new destination is a line here."""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "customerio": "segment",
    "segment": "segment",
    "hubspot": "hubspot",
    "salesforce": "salesforce",
    "clarify": "clarify",
    "conversion": "conversion",
    "clevertap": "clevertap",
    "braze": "braze",
    "iterable": "iterable",
    "mixpanel": "mixpanel",
    "webhook": "webhook",
}


def module(kind: str | None) -> ModuleType | None:
    name = MODULES.get(kind or "")
    if not name:
        return None
    try:
        return importlib.import_module(f"retl_assets.destinations.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"retl_assets.destinations.{name}":
            raise
        return None  # listed, not built yet


def config_class(kind: str | None):
    m = module(kind)
    return m.CONFIGS[kind] if m else None


def actions(kind: str) -> tuple[str, ...]:
    m = module(kind)
    assert m is not None
    return m.ACTIONS[kind]


def associates(kind: str) -> bool:
    """Whether the destination links records to other objects' records (`associations`)."""
    m = module(kind)
    return kind in getattr(m, "ASSOCIATES", ())
