"""Iterable's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from typing import Literal as Choice

from retl_assets.project.schema import DestinationBase, Secret


class IterableConfig(DestinationBase):
    api_key: Secret
    region: Choice["us", "eu"] = "us"
