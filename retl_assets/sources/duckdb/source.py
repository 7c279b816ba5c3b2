"""DuckDB files: the embedded default warehouse."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, Check, probe_sql
from retl_assets.state.engine import memory_limit, quote
from retl_assets.state.files import sql_path


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

    @contextmanager
    def state_session(self, schema: str, model: str) -> Iterator[DuckDBState]:
        """The warehouse attached read-only, beside a state file of retl's own next to it,
        one per model (`<warehouse>.<schema>.<model>.duckdb`): one process at a time may
        write a DuckDB file, two models may run at once, and the warehouse must stay readable
        by everyone else and unchangeable by a model."""
        if not self.path.exists():
            raise SourceError(f"source {self.name!r}: DuckDB file {self.path} does not exist")
        state = self.path.with_name(f"{self.path.stem}.{schema}.{model}.duckdb")
        con = duckdb.connect()
        try:
            con.execute("SET enable_progress_bar = false")
            # retl's own DuckDB budget, as for the local diff: spill rather than grow.
            con.execute(f"SET memory_limit = '{memory_limit()}'")
            con.execute("SET preserve_insertion_order = false")
            con.execute(f"SET temp_directory = {sql_path(Path(str(state) + '.tmp'))}")
            con.execute(f"ATTACH {sql_path(state)} AS retl_state_db")
            con.execute(f"ATTACH {sql_path(self.path)} AS warehouse (READ_ONLY)")
            con.execute("USE warehouse")  # the model's names resolve in the warehouse
            con.execute(f"CREATE SCHEMA IF NOT EXISTS retl_state_db.{quote(schema)}")
        except duckdb.Error as e:
            con.close()
            raise SourceError(f"source {self.name!r}: cannot open its state file {state}: "
                              f"{str(e).splitlines()[0]}") from None
        try:
            yield DuckDBState(self.name, con, schema)
        finally:
            con.close()


class DuckDBState:
    dialect = "duckdb"

    def __init__(self, name: str, con: duckdb.DuckDBPyConnection, schema: str):
        self.name, self._con, self._schema = name, con, schema  # in catalog retl_state_db

    def table(self, name: str) -> str:
        return f"retl_state_db.{quote(self._schema)}.{quote(name)}"

    def fingerprint(self, columns: list[str]) -> str:
        return f"hash({', '.join(columns)})"  # as the local diff's

    def tables(self) -> list[str]:
        return [r[0] for r in self._con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = "
            "'retl_state_db' AND table_schema = ?", [self._schema]).fetchall()]

    def execute(self, sql: str) -> None:
        self._run(sql)

    def rows(self, sql: str) -> list[tuple]:
        return self._run(sql).fetchall()

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        try:
            reader = self._con.sql(sql).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as e:
            raise SourceError(f"source {self.name!r}: {str(e).splitlines()[0]}") from None
        yield reader

    def _run(self, sql: str):
        try:
            return self._con.execute(sql)
        except duckdb.Error as e:
            raise SourceError(f"source {self.name!r}: {str(e).splitlines()[0]}") from None

