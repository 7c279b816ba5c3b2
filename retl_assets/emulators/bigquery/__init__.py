"""Local emulator of BigQuery's REST API v2, answered by a DuckDB file.

api.py is the HTTP face (auth, faults, jobs, paging, errors); store.py the warehouse behind
it (name resolution, sqlglot's BigQuery -> DuckDB translation, the REST row encoding). What
BigQuery publishes, with sources, is in docs/warehouses/bigquery.md. It never imports retl's
sources or destinations: the emulator is an independent oracle of the API's contract.
"""

from retl_assets.emulators.bigquery.api import BigQueryEmulator, build_bigquery_app, make_app

__all__ = ["BigQueryEmulator", "build_bigquery_app", "make_app"]
