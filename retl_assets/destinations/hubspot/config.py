"""HubSpot's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from pydantic import Field

from retl_assets.project.schema import DestinationBase, Secret


class HubSpotConfig(DestinationBase):
    access_token: Secret
    requests_per_10s: int = Field(100, ge=1, le=1000,
                                  description="100 on Free/Starter, 190 on Pro/Enterprise")
