"""Local emulators of destination APIs, served over real HTTP for tests and demos."""

from __future__ import annotations

from retl_assets.emulators.segment import Faults, SegmentEmulator, build_segment_app
from retl_assets.emulators.server import EmulatorServer, serve_forever

__all__ = ["EmulatorServer", "Faults", "SegmentEmulator", "build_segment_app", "serve_forever"]
