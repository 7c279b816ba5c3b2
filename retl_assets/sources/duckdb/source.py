"""DuckDB files: the embedded default warehouse."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, Check, probe_sql


class DuckDBSource:
    dialect = "duckdb"

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

    def check(self, tables: Iterable[str]) -> Check:
        tables = list(tables)
        try:
            with self.connect() as con:
                for table in tables:
                    try:
                        con.execute(probe_sql(table))
                    except duckdb.CatalogException as e:
                        return Check(False, f"{self.name}: table {table}: no such table "
                                            f"({str(e).splitlines()[0]})")
                    except duckdb.Error as e:
                        return Check(False, f"{self.name}: table {table}: cannot read "
                                            f"({str(e).splitlines()[0]})")
        except SourceError as e:
            return Check(False, e.description.replace(f"source {self.name!r}: ",
                                                      f"{self.name}: ", 1))
        return Check(True, f"{self.name}: opened {self.path.name} read-only; "
                           f"{len(tables)} tables readable")
