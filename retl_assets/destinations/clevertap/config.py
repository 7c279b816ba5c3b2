"""Clevertap's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from pydantic import Field

from retl_assets.project.schema import DestinationBase, Secret


class CleverTapConfig(DestinationBase):
    account_id: str
    passcode: Secret
    region: str = Field("us1", pattern=r"^[a-z0-9]+$",
                        description="the account's region: us1, eu1, in1, sg1, aps3, mec1")
