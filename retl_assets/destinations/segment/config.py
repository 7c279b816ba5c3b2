"""Segment's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from retl_assets.project.schema import DestinationBase, Secret


class SegmentConfig(DestinationBase):
    write_key: Secret
