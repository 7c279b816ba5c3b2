"""Emulator names -> the module that serves each; every module offers `make_app`.

    make_app(kind, keys: set[str] | None, faults: Faults, rate_limit: tuple | None) -> ASGI app
"""

from __future__ import annotations

import importlib

from retl_assets.emulators.common import Faults

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


def available() -> list[str]:
    out = []
    for kind, name in MODULES.items():
        try:
            importlib.import_module(f"retl_assets.emulators.{name}")
        except ModuleNotFoundError:
            continue
        out.append(kind)
    return out


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    module = importlib.import_module(f"retl_assets.emulators.{MODULES[kind]}")
    return module.make_app(kind, keys, faults, rate_limit)
