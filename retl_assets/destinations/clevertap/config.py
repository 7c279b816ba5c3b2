"""CleverTap's settings in the project file (`destinations.NAME`).

`region` has no default. Each account lives in one region and its API answers only on that
region's host ("your API endpoint based on the region of your account", CleverTap's Common
API Components page); another region's host answers 401, which reads like a wrong passcode,
and the data would have gone to a data center the account did not choose (CleverTap offers
regions "for customers who need in-region storage and processing for regulatory
compliance"). The sources do not agree on a default either: the docs call Europe the
default region, the Node library defaults to eu1 "for most accounts", and retl used to
default to us1. So the region is asked for, unless base_url names the endpoint.
"""

from __future__ import annotations

from typing import Literal as Choice

from pydantic import Field, model_validator

from retl_assets.project.schema import DestinationBase, Secret

# CleverTap's regions, as its docs and its Node library (clevertap 1.3.0) list them.
REGIONS = {"eu1": "Europe", "in1": "India", "sg1": "Singapore", "us1": "United States",
           "aps3": "Indonesia", "mec1": "Middle East (UAE)"}
Region = Choice["eu1", "in1", "sg1", "us1", "aps3", "mec1"]


def missing_region() -> str:
    listed = ", ".join(f"{code} ({place})" for code, place in REGIONS.items())
    return (f"region is required: the account's region, one of {listed}. It is the "
            f"start of your CleverTap dashboard's address (https://eu1.dashboard.clevertap.com "
            f"-> eu1). retl does not guess it: another region's endpoint refuses the account "
            f"(401). Or give base_url for another endpoint.")


class CleverTapConfig(DestinationBase):
    account_id: str
    passcode: Secret
    region: Region | None = Field(
        None, description="the account's region (required unless base_url is given): "
                          + ", ".join(REGIONS))

    @model_validator(mode="after")
    def _endpoint(self) -> CleverTapConfig:
        if not self.region and not self.base_url:
            raise ValueError(missing_region())
        return self
