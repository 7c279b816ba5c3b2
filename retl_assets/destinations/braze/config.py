"""Braze's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from pydantic import model_validator

from retl_assets.project.schema import DestinationBase, Secret


class BrazeConfig(DestinationBase):
    api_key: Secret
    instance: str | None = None  # e.g. "iad-01" for https://rest.iad-01.braze.com

    @model_validator(mode="after")
    def _endpoint(self) -> BrazeConfig:
        if not self.base_url and not self.instance:
            raise ValueError("give the REST endpoint: instance (e.g. iad-01) or base_url "
                             "(e.g. https://rest.iad-01.braze.com)")
        return self
