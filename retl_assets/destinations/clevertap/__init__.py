"""CleverTap: profiles and events through /1/upload, deletes through /1/delete/profiles.json.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/clevertap/.
"""

from __future__ import annotations

from retl_assets.destinations.clevertap.config import CleverTapConfig
from retl_assets.destinations.clevertap.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "clevertap": Facts(config=CleverTapConfig, connect=connect, actions=ACTIONS["clevertap"]),
}

__all__ = ["FACTS", "CleverTapConfig", "connect"]
