"""Conversion (conversion.ai): contacts, events and custom objects on its v2 API.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/conversion/.
"""

from __future__ import annotations

from retl_assets.destinations.conversion.config import ConversionConfig
from retl_assets.destinations.conversion.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "conversion": Facts(config=ConversionConfig, connect=connect, actions=ACTIONS["conversion"]),
}

__all__ = ["FACTS", "ConversionConfig", "connect"]
