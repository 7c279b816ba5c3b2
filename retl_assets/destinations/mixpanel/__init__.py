"""Mixpanel: profiles through /engage, events through /import.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/mixpanel/.
"""

from __future__ import annotations

from retl_assets.destinations.mixpanel.config import MixpanelConfig
from retl_assets.destinations.mixpanel.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "mixpanel": Facts(config=MixpanelConfig, connect=connect, actions=ACTIONS["mixpanel"]),
}

__all__ = ["FACTS", "MixpanelConfig", "connect"]
