from typing import Literal

from pydantic import Field

from retl_assets.project.schema import Secret, SourceBase


class BigQueryConfig(SourceBase):
    type: Literal["bigquery"]
    project: str = Field(description="the project that runs (and pays for) the queries")
    dataset: str | None = Field(
        None, description="default dataset: where unqualified table names are looked up")
    location: str | None = Field(None, description="where the jobs run (US, EU, a region)")
    credentials_file: Secret | None = Field(
        None, description="a service account's JSON key file, or {env: NAME} naming a "
        "variable that holds its path (or the JSON itself); else the platform's Application "
        "Default Credentials")
    access_token: Secret | None = Field(
        None, description="an OAuth access token used as is (short-lived; the emulator's "
        "tokens), instead of credentials_file")
    api_endpoint: str | None = Field(
        None, description="the REST endpoint: a private endpoint or the emulator "
        "(default https://bigquery.googleapis.com)")
    retry_seconds: float = Field(
        120, gt=0, description="how long one API call is retried on passing faults "
        "(429 rateLimitExceeded, 5xx, connection errors)")
