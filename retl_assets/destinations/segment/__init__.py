"""Segment and Customer.io Data Pipelines (one protocol, the Segment spec).

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/segment/.
"""

from __future__ import annotations

from retl_assets.destinations.segment.config import SegmentConfig
from retl_assets.destinations.segment.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "customerio": Facts(config=SegmentConfig, connect=connect, actions=ACTIONS["customerio"]),
    "segment": Facts(config=SegmentConfig, connect=connect, actions=ACTIONS["segment"]),
}

__all__ = ["FACTS", "SegmentConfig", "connect"]
