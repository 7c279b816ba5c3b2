"""Local emulator of the Segment-spec tracking API (Segment, Customer.io Data Pipelines).

api.py is the HTTP face (auth, limits, routes). What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.segment.api import SegmentEmulator, build_segment_app, make_app

__all__ = ["SegmentEmulator", "build_segment_app", "make_app"]
