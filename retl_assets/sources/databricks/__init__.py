"""Databricks SQL warehouses through the SQL Statement Execution API 2.0 (databricks-sdk),
results fetched as Arrow chunk by chunk from external links."""

from retl_assets.sources.databricks.config import DatabricksConfig
from retl_assets.vendors import SourceFacts


def _connect(name, config, root):
    from retl_assets.project import resolve_secret
    from retl_assets.sources.databricks.source import DatabricksSource

    return DatabricksSource(
        name, host=config.workspace, warehouse_id=config.warehouse,
        token=resolve_secret(config.token, f"sources.{name}.token"), profile=config.profile,
        catalog=config.catalog, schema=config.schema_, wait_timeout_s=config.wait_timeout_s,
        statement_timeout_s=config.statement_timeout_s, retry_timeout_s=config.retry_timeout_s)


FACTS = SourceFacts(config=DatabricksConfig, connect=_connect, dialect="databricks",
                    tested="an emulator of its SQL Statement Execution API (answered by DuckDB)",
                    read_only_session=False, change_marker="DESCRIBE HISTORY (Delta version)")
