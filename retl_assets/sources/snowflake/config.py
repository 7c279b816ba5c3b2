from typing import Literal

from pydantic import Field, model_validator

from retl_assets.project.schema import Secret, SourceBase


class SnowflakeConfig(SourceBase):
    type: Literal["snowflake"]
    account: str = Field(description="account identifier, e.g. myorg-myaccount")
    user: str
    password: Secret | None = Field(None, description="or key-pair auth below")
    private_key: Secret | None = Field(None, description="PEM text of the user's private key")
    private_key_path: str | None = Field(None, description="PEM file, relative to the project file")
    private_key_passphrase: Secret | None = Field(None, description="when the key is encrypted")
    role: str | None = None
    warehouse: str | None = None
    database: str | None = None
    schema_: str | None = Field(None, alias="schema")
    host: str | None = Field(None, description="default: <account>.snowflakecomputing.com "
                                              "(set it for PrivateLink or a local server)")
    port: int | None = Field(None, ge=1, le=65535, description="default: 443")
    protocol: Literal["https", "http"] | None = Field(None, description="default: https")
    login_timeout: int = Field(60, ge=1, description="seconds to sign in before giving up")
    network_timeout: int | None = Field(None, ge=1, description="seconds per request; default: "
                                                                "the connector's (no limit)")

    @model_validator(mode="after")
    def _one_auth(self):
        given = [n for n in ("password", "private_key", "private_key_path")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            found = " and ".join(f"`{n}`" for n in given) if given else "none"
            raise ValueError("give exactly one way to sign in: `password`, `private_key` (PEM "
                             f"text) or `private_key_path`; found {found}")
        if self.private_key_passphrase is not None and self.password is not None:
            raise ValueError("`private_key_passphrase` goes with `private_key` or "
                             "`private_key_path`, not with `password`")
        return self
