"""Braze: users and events by /users/track, deletes by /users/delete.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/braze/.
"""

from __future__ import annotations

from retl_assets.destinations.braze.config import BrazeConfig
from retl_assets.destinations.braze.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "braze": Facts(config=BrazeConfig, connect=connect, actions=ACTIONS["braze"]),
}

__all__ = ["FACTS", "BrazeConfig", "connect"]
