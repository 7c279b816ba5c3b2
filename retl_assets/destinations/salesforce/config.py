"""Salesforce's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from retl_assets.project.schema import DestinationBase, Secret

API_VERSION = "68.0"  # Winter '27, the current release (GET /services/data/ lists them)


class SalesforceConfig(DestinationBase):
    access_token: Secret = Field(description="OAuth access token (session id)")
    instance_url: str | None = Field(None, description="https://<your domain>.my.salesforce.com")
    api_version: str = Field(API_VERSION, pattern=r"^\d{2}\.0$")
    bulk_threshold: int | None = Field(
        2000, ge=0, description="more records of one kind than this go through a Bulk API 2.0 "
                                "job; null: never")
    bulk_poll_s: float = Field(2.0, gt=0, description="first wait between bulk job polls")
    bulk_timeout_s: float = Field(3600.0, gt=0, description="abort a bulk job after this long")

    @model_validator(mode="after")
    def _instance(self) -> SalesforceConfig:
        if not (self.instance_url or self.base_url):
            raise ValueError("give instance_url, your org's https://<domain>.my.salesforce.com")
        return self
