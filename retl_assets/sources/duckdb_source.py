"""DuckDB files: the embedded default warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS


class DuckDBSource:
    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The warehouse itself, read-only: snapshots are written straight from it."""
        if not self.path.exists():
            raise SourceError(f"source {self.name!r}: DuckDB file {self.path} does not exist")
        try:
            # Read-only: a sync must never change the warehouse, and readers don't block.
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as e:
            raise SourceError(f"source {self.name!r}: cannot open {self.path}: {e}") from None
        try:
            con.execute("SET enable_progress_bar = false")
            yield con
        finally:
            con.close()

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        with self.connect() as con:
            try:
                reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
            except duckdb.Error as e:
                raise SourceError(f"source {self.name!r}: query failed: {e}") from None
            yield reader
