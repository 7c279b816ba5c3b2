"""Local emulator of the Databricks SQL Statement Execution API 2.0, answered by DuckDB.

api.py is the HTTP face (auth, limits, statements, chunks, external links); engine.py the
warehouse (Databricks SQL translated by sqlglot, run on a DuckDB file). What Databricks
publishes, with sources, is in docs/warehouses/databricks.md. It never imports retl's sources
or destinations: the emulator is an independent oracle of the API's contract.
"""

from retl_assets.emulators.databricks.api import (
    DEFAULT_WAREHOUSE,
    DatabricksEmulator,
    build_databricks_app,
    make_app,
)
from retl_assets.emulators.databricks.engine import SqlFailure, Warehouse

__all__ = ["DEFAULT_WAREHOUSE", "DatabricksEmulator", "SqlFailure", "Warehouse",
           "build_databricks_app", "make_app"]
