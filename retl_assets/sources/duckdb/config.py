from typing import Literal

from pydantic import Field

from retl_assets.project.schema import SourceBase


class DuckDBConfig(SourceBase):
    type: Literal["duckdb"]
    path: str = Field(description="DuckDB file, relative to the project file")
