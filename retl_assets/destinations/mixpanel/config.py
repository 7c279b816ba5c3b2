"""Mixpanel's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from typing import Literal as TypingLiteral

from pydantic import Field, model_validator

from retl_assets.project.schema import DestinationBase, Secret

EVENTS_PER_MINUTE = 1_800_000  # "~30k events per second", over a rolling minute, per project


class MixpanelConfig(DestinationBase):
    project_token: Secret = Field(description="the project's token: $token on /engage, and "
                                              "the /import user name without a service account")
    project_id: str | None = Field(None, description="needed with a service account")
    service_account_user: str | None = None
    service_account_secret: Secret | None = None
    region: TypingLiteral["us", "eu", "in"] = "us"
    rate_limit_events: int = Field(EVENTS_PER_MINUTE, ge=1, description=(
        "Mixpanel's ingestion limit: ~30k events a second over a rolling minute"))
    rate_limit_seconds: float = Field(60.0, gt=0, description="the limit's rolling window")

    @model_validator(mode="after")
    def _service_account(self) -> MixpanelConfig:
        if (self.service_account_user is None) != (self.service_account_secret is None):
            raise ValueError("give both service_account_user and service_account_secret, "
                             "or neither (then /import authenticates with the project token)")
        if self.service_account_user is not None and not self.project_id:
            raise ValueError("a service account needs project_id")
        return self
