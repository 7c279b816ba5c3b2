"""DuckDB files: the embedded default warehouse, opened read-only."""

from retl_assets.sources.duckdb.config import DuckDBConfig
from retl_assets.vendors import SourceFacts


def _connect(name, config, root):
    from retl_assets.sources.duckdb.source import DuckDBSource

    return DuckDBSource(name, (root / config.path).resolve())


FACTS = SourceFacts(config=DuckDBConfig, connect=_connect, dialect="duckdb",
                    tested="a real engine (DuckDB files)", read_only_session=True,
                    in_warehouse=True)
