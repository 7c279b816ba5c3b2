"""DuckDB files: the embedded default warehouse."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, Check, probe_sql, sync_log_columns
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


    def sync_log_path(self, schema: str) -> Path:
        """The file holding the sync logs, beside the warehouse (`<warehouse>.<schema>.duckdb`):
        the warehouse itself stays read-only. Read it with
        `ATTACH '<that file>' AS retl_logs (READ_ONLY)`, then `retl_logs.<schema>.<table>`."""
        return self.path.with_name(f"{self.path.stem}.{schema}.duckdb")

    def append_sync_log(self, schema: str, table: str, parquet: Path, cutoff: datetime) -> int:
        path = self.sync_log_path(schema)
        target = f"{quote(schema)}.{quote(table)}"
        con = _open_writable(self.name, path)
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {target} "
                        f"({sync_log_columns('VARCHAR', 'TIMESTAMPTZ')})")
            con.execute("BEGIN")
            rows = con.execute(f"INSERT INTO {target} SELECT * FROM "
                               f"read_parquet({sql_path(parquet)})").fetchone()[0]
            con.execute(f'DELETE FROM {target} WHERE "logged_at" < ?', [cutoff])
            con.execute("COMMIT")
            return int(rows)
        except duckdb.Error as e:
            raise SourceError(f"source {self.name!r}: cannot write the sync log {target} in "
                              f"{path}: {str(e).splitlines()[0]}") from None
        finally:
            con.close()


def _open_writable(name: str, path: Path, wait_s: float = 10.0) -> duckdb.DuckDBPyConnection:
    """One process at a time may write a DuckDB file: another run's log load holds it for
    a moment, so wait a little for it rather than fail."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() >= deadline:
                raise SourceError(f"source {name!r}: cannot open the sync log file {path}: "
                                  f"{str(e).splitlines()[0]}") from None
            time.sleep(0.2)


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

