"""Conversion's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from pydantic import Field

from retl_assets.project.schema import DestinationBase, Secret


class ConversionConfig(DestinationBase):
    api_key: Secret = Field(description="sk_live_..., from Settings > Integrations")
