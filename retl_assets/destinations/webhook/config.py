"""Webhook's settings in the project file (`destinations.NAME`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from retl_assets.project.schema import DestinationBase, Secret

SIGNATURE_HEADER = "X-Retl-Signature"
DEFAULT_REQUEST_BYTES = 4 * 1024 * 1024
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class WebhookConfig(DestinationBase):
    url: str = Field(description="https:// endpoint (http:// only for localhost)")
    secret: Secret = Field(description="key of the X-Retl-Signature HMAC")
    headers: dict[str, Secret] = Field(default_factory=dict,
                                       description="extra headers; values may be {env: NAME}")
    max_request_bytes: int = Field(DEFAULT_REQUEST_BYTES, ge=1024)

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return url
        if parts.scheme == "http" and parts.hostname in LOCAL_HOSTS:
            return url
        raise ValueError("must be an https:// URL (http:// is allowed for localhost only)")

    @field_validator("headers")
    @classmethod
    def _own_headers(cls, headers: dict[str, Secret]) -> dict[str, Secret]:
        for name in headers:
            if name.lower() in (SIGNATURE_HEADER.lower(), "content-type", "content-length"):
                raise ValueError(f"header {name!r} is set by retl")
        return headers

    @model_validator(mode="after")
    def _no_base_url(self) -> WebhookConfig:
        if self.base_url is not None:
            raise ValueError("a webhook takes `url`, not `base_url`")
        return self
