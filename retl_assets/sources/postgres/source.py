"""PostgreSQL through ADBC, which streams Arrow via COPY, in a read-only session."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import quote as url_quote

import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import (
    Check,
    CursorSession,
    probe_sql,
    rebatch,
    refused_connection,
    sqlstate_meaning,
    sync_log_columns,
)
from retl_assets.state.engine import quote


class PostgresSource:
    dialect = "postgres"

    def __init__(self, name: str, dsn: str):
        self.name = name
        self._dsn = dsn  # holds the password: never log it

    def __repr__(self) -> str:
        return f"PostgresSource({self.name!r})"

    @classmethod
    def from_fields(cls, name: str, host: str, port: int, user: str | None,
                    password: str | None, database: str) -> PostgresSource:
        auth = url_quote(user or "", safe="")
        if password:
            auth += ":" + url_quote(password, safe="")
        at = f"{auth}@" if auth else ""
        return cls(name, f"postgresql://{at}{host}:{port}/{url_quote(database, safe='')}")

    @contextmanager
    def _session(self):
        """A connection whose every transaction is read-only. One query runs per session:
        a function that flips the default back (set_config) still runs read-only itself."""
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg

        try:
            con = pg.connect(self._dsn, autocommit=True)
            con.cursor().execute("SET default_transaction_read_only = on")
        except adbc_driver_manager.Error as e:
            raise SourceError(f"source {self.name!r}: {refused_connection(_clean(e))}") from None
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        import adbc_driver_manager

        with self._session() as con:
            cur = con.cursor()
            try:
                cur.execute(sql)
                reader = cur.fetch_record_batch()
            except adbc_driver_manager.Error as e:
                raise SourceError(f"source {self.name!r}: query failed: {_clean(e)}") from None
            yield _failing_as(self.name, rebatch(_normalise(reader)))

    @contextmanager
    def state_session(self, schema: str, model: str) -> Iterator[PostgresState]:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg

        try:
            con = pg.connect(self._dsn, autocommit=True)
        except adbc_driver_manager.Error as e:
            raise SourceError(f"source {self.name!r}: {refused_connection(_clean(e))}") from None
        try:
            state = PostgresState(self.name, con, schema)
            # The one session that writes: a role kept read-only by default (`retl grants`)
            # writes here, to the schema it owns, and nowhere else it has no grant on.
            state.execute("SET default_transaction_read_only = off")
            literal = schema.replace("'", "''")
            # CREATE ... IF NOT EXISTS still asks for CREATE on the database: ask only if new.
            if not state.rows(f"SELECT 1 FROM pg_namespace WHERE nspname = '{literal}'"):
                state.execute(f"CREATE SCHEMA {quote(schema)}")
            yield state
        finally:
            con.close()

    def append_sync_log(self, schema: str, table: str, parquet: Path, cutoff: datetime) -> int:
        """COPY the run's outcomes into `schema.table` (ADBC's bulk ingest), in the one
        session that writes retl's own schema, then drop rows logged before `cutoff`."""
        import adbc_driver_manager
        import pyarrow.parquet as pq

        with self.state_session(schema, "sync_log") as state:
            target = state.table(table)
            state.execute(f"CREATE TABLE IF NOT EXISTS {target} "
                          f"({sync_log_columns('text', 'timestamptz')})")
            batches = pq.ParquetFile(parquet).iter_batches()
            reader = pa.RecordBatchReader.from_batches(pq.read_schema(parquet), batches)
            cur = state._con.cursor()
            try:
                rows = cur.adbc_ingest(table, reader, mode="append", db_schema_name=schema)
            except adbc_driver_manager.Error as e:
                raise SourceError(f"source {self.name!r}: cannot load the sync log "
                                  f"{target}: {_clean(e)}") from None
            finally:
                cur.close()
            state.execute(f"DELETE FROM {target} WHERE \"logged_at\" < "
                          f"'{cutoff.isoformat()}'::timestamptz")
            return int(rows if rows is not None and rows >= 0 else 0)

    def check(self, tables: Iterable[str]) -> Check:
        import adbc_driver_manager

        tables = list(tables)
        try:
            with self._session() as con:
                cur = con.cursor()
                for table in tables:
                    try:
                        cur.execute(probe_sql(table))
                        cur.fetch_arrow_table()
                    except adbc_driver_manager.Error as e:
                        meaning = sqlstate_meaning(getattr(e, "sqlstate", None)) or "cannot read"
                        return Check(False, f"{self.name}: table {table}: {meaning} "
                                            f"({_clean(e)})")
        except SourceError as e:
            return Check(False, e.description.replace(f"source {self.name!r}: ",
                                                      f"{self.name}: ", 1))
        return Check(True, f"{self.name}: connected; read-only session; "
                           f"{len(tables)} tables readable")


def _normalise(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Give types the driver leaves opaque a real Arrow type: NUMERIC becomes a decimal
    (precision and scale from its typmod; float64 when unconstrained), others their text."""
    fields, casts = [], {}
    for i, f in enumerate(reader.schema):
        if isinstance(f.type, pa.BaseExtensionType) and getattr(f.type, "type_name", "") == "numeric":
            typmod = int((f.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
            target = pa.float64()
            if typmod >= 4 and ((typmod - 4) >> 16) <= 38:
                target = pa.decimal128((typmod - 4) >> 16, (typmod - 4) & 0xFFFF)
            casts[i] = target
        elif isinstance(f.type, pa.BaseExtensionType) and f.type.extension_name == "arrow.opaque":
            casts[i] = f.type.storage_type
        fields.append(pa.field(f.name, casts.get(i, f.type), f.nullable))
    if not casts:
        return reader
    schema = pa.schema(fields)

    def batches():
        for batch in reader:
            cols = [c.storage.cast(casts[i]) if i in casts else c
                    for i, c in enumerate(batch.columns)]
            yield pa.RecordBatch.from_arrays(cols, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


class PostgresState(CursorSession):
    """A read-write session for retl's state schema (`diff: in_warehouse`). Only the schema
    retl owns may be written: `retl grants` gives the role no other write."""

    dialect = "postgres"

    def __init__(self, name: str, con, schema: str):
        self.name, self._con, self._schema = name, con, schema

    def table(self, name: str) -> str:
        return f"{quote(self._schema)}.{quote(name)}"

    def fingerprint(self, columns: list[str]) -> str:
        # JSON keeps a value's kind (7 against "7") and NULL apart from every text.
        return f"md5(json_build_array({', '.join(columns)})::text)"

    def tables(self) -> list[str]:
        schema = self._schema.replace("'", "''")
        return [r[0] for r in self.rows(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'")]

    def _reader(self, cursor) -> pa.RecordBatchReader:
        return _failing_as(self.name, rebatch(_normalise(cursor.fetch_record_batch())))

    def _cursor(self, sql: str):
        import adbc_driver_manager

        cur = self._con.cursor()
        try:
            cur.execute(sql)
        except adbc_driver_manager.Error as e:
            cur.close()
            raise SourceError(f"source {self.name!r}: {_clean(e)}") from None
        return cur


def _failing_as(name: str, reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """The server's errors while rows stream (a read-only refusal, say) as SourceErrors."""

    def batches():
        try:
            yield from reader
        except pa.ArrowException as e:
            raise SourceError(f"source {name!r}: query failed: {_clean(e)}") from None

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _clean(error: Exception) -> str:
    # The driver's message is useful; its first line is enough and never holds the DSN.
    return str(error).strip().splitlines()[0]
