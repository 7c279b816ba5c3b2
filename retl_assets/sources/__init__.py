"""Warehouses behind one small interface: `open_source(project, name).stream(sql)`."""

from __future__ import annotations

from retl_assets.project import Project, resolve_secret
from retl_assets.project.schema import DuckDBSource as DuckDBConfig
from retl_assets.sources.base import Source
from retl_assets.sources.duckdb_source import DuckDBSource
from retl_assets.sources.postgres_source import PostgresSource


def open_source(project: Project, name: str) -> Source:
    config = project.config.sources[name]
    if isinstance(config, DuckDBConfig):
        return DuckDBSource(name, (project.root / config.path).resolve())
    where = f"sources.{name}"
    dsn = resolve_secret(config.dsn, f"{where}.dsn")
    if dsn:
        return PostgresSource(name, dsn)
    return PostgresSource.from_fields(
        name, config.host, config.port, config.user,
        resolve_secret(config.password, f"{where}.password"), config.database or "",
    )


__all__ = ["DuckDBSource", "PostgresSource", "Source", "open_source"]
