"""Clarify's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from retl_assets.project.schema import DestinationBase, Secret


class ClarifyConfig(DestinationBase):
    api_key: Secret
    workspace: str = Field(description="the workspace slug, as in app.clarify.ai/<slug>")

    @field_validator("workspace")
    @classmethod
    def _slug(cls, slug: str) -> str:
        if not slug or "/" in slug or slug.strip() != slug:
            raise ValueError("give the workspace slug alone, e.g. acme")
        return slug
