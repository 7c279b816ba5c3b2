"""Iterable: users by bulkUpdate, events by trackBulk, deletes one user a request.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/iterable/.
"""

from __future__ import annotations

from retl_assets.destinations.iterable.config import IterableConfig
from retl_assets.destinations.iterable.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "iterable": Facts(config=IterableConfig, connect=connect, actions=ACTIONS["iterable"]),
}

__all__ = ["FACTS", "IterableConfig", "connect"]
