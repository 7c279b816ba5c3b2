"""HubSpot CRM: batch upsert, update and archive on any object, v4 default associations, and
search where a match property is not unique (companies by domain).

config.py is its entry in the project file; writer.py turns a sync's records into HubSpot's
requests and its answers into outcomes. The emulator is emulators/hubspot/.
"""

from __future__ import annotations

from retl_assets.destinations.hubspot.config import HubSpotConfig
from retl_assets.destinations.hubspot.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "hubspot": Facts(config=HubSpotConfig, connect=connect, actions=ACTIONS["hubspot"],
                     associations=True),
}

__all__ = ["FACTS", "HubSpotConfig", "connect"]
