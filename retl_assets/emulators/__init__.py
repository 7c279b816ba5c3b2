"""Local emulators of destination APIs, served over real HTTP for tests and demos."""

from __future__ import annotations

from retl_assets.emulators.common import Faults
from retl_assets.emulators.hubspot import HubSpotEmulator, build_hubspot_app
from retl_assets.emulators.segment import SegmentEmulator, build_segment_app
from retl_assets.emulators.server import EmulatorServer, serve_forever

__all__ = [
    "EmulatorServer",
    "Faults",
    "HubSpotEmulator",
    "SegmentEmulator",
    "build_hubspot_app",
    "build_segment_app",
    "serve_forever",
]
