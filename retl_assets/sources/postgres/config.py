from typing import Literal

from pydantic import Field, model_validator

from retl_assets.project.schema import Secret, SourceBase


class PostgresConfig(SourceBase):
    type: Literal["postgres"]
    dsn: Secret | None = Field(None, description="libpq URI; or the fields below")
    host: str = "127.0.0.1"
    port: int = 5432
    user: str | None = None
    password: Secret | None = None
    database: str | None = None

    @model_validator(mode="after")
    def _dsn_or_fields(self):
        if self.dsn is None and self.database is None:
            raise ValueError("give either `dsn` or `database` (with host, port, user, password)")
        return self
