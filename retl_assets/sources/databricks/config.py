import re
from typing import Literal

from pydantic import Field, model_validator

from retl_assets.project.schema import Secret, SourceBase

# A SQL warehouse's HTTP path, as its connection details show it (older ones say "endpoints").
WAREHOUSE_PATH = re.compile(r"^/?sql/1\.0/(?:warehouses|endpoints)/([A-Za-z0-9_-]+)/?$")


class DatabricksConfig(SourceBase):
    type: Literal["databricks"]
    host: str | None = Field(
        None, description="workspace URL (https://adb-123.azuredatabricks.net) or a full URL "
                          "such as http://127.0.0.1:8080 for the emulator; default: the SDK's "
                          "DATABRICKS_HOST or config profile")
    server_hostname: str | None = Field(None, description="the workspace's hostname, as "
                                        "connection details show it (instead of `host`)")
    http_path: str | None = Field(None, description="the SQL warehouse's /sql/1.0/warehouses/<id>")
    warehouse_id: str | None = Field(None, description="the SQL warehouse's id (or `http_path`)")
    token: Secret | None = Field(None, description="personal access token; default: the SDK's "
                                 "own auth (DATABRICKS_TOKEN, OAuth, a config profile)")
    profile: str | None = Field(None, description="a ~/.databrickscfg profile for the SDK's auth")
    catalog: str | None = Field(None, description="default catalog of the models' SQL")
    schema_: str | None = Field(None, alias="schema",
                                description="default schema of the models' SQL")
    wait_timeout_s: int = Field(10, ge=0, le=50, description="how long each request waits for "
                                "the statement before polling (0, or 5 to 50)")
    statement_timeout_s: float = Field(3600, gt=0, description="cancel a statement still "
                                       "running after this long")
    retry_timeout_s: int = Field(60, ge=1, description="how long the SDK retries a refused "
                                 "connection or a 429 before giving up")

    @model_validator(mode="after")
    def _one_host_one_warehouse(self):
        if self.host and self.server_hostname:
            raise ValueError("give `host` or `server_hostname`, not both")
        if not self.http_path and not self.warehouse_id:
            raise ValueError("give the SQL warehouse: `http_path` (/sql/1.0/warehouses/<id>) "
                             "or `warehouse_id`")
        if self.http_path:
            found = WAREHOUSE_PATH.match(self.http_path.strip())
            if not found:
                raise ValueError("http_path must be a SQL warehouse's /sql/1.0/warehouses/<id>: "
                                 "the Statement Execution API runs on SQL warehouses, not "
                                 "clusters")
            if self.warehouse_id and self.warehouse_id != found[1]:
                raise ValueError("http_path and warehouse_id name different warehouses")
        if self.wait_timeout_s and self.wait_timeout_s < 5:
            raise ValueError("wait_timeout_s must be 0 or between 5 and 50")
        return self

    @property
    def warehouse(self) -> str:
        if self.warehouse_id:
            return self.warehouse_id
        return WAREHOUSE_PATH.match(self.http_path.strip())[1]  # type: ignore[union-attr, index]

    @property
    def workspace(self) -> str | None:
        """The host as the SDK takes it: a URL (https:// added to a bare hostname)."""
        host = (self.host or self.server_hostname or "").strip().rstrip("/")
        if not host:
            return None
        return host if "://" in host else f"https://{host}"
