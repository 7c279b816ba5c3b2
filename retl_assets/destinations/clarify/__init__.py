"""Clarify CRM: people and companies through its JSON:API bulk record endpoints.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/clarify/.
"""

from __future__ import annotations

from retl_assets.destinations.clarify.config import ClarifyConfig
from retl_assets.destinations.clarify.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "clarify": Facts(config=ClarifyConfig, connect=connect, actions=ACTIONS["clarify"]),
}

__all__ = ["FACTS", "ClarifyConfig", "connect"]
