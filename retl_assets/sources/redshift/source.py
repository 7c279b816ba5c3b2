"""Redshift over the PostgreSQL wire protocol, through psycopg 3 (libpq).

Redshift has no `COPY ... TO STDOUT`, which ADBC's PostgreSQL driver fetches with, so rows
come from a cursor in a read-only transaction: `BEGIN READ ONLY`, `DECLARE ... CURSOR FOR`,
then `FETCH FORWARD n` until it runs dry. Memory holds one batch, however many rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import (
    BATCH_ROWS,
    Check,
    probe_sql,
    refused_connection,
    sqlstate_meaning,
)
from retl_assets.sources.redshift.credentials import IamAuth, Login, PasswordAuth

FETCH_ROWS = 16_000  # rows per FETCH: four fill one batch
CURSOR = "retl_rows"  # Redshift allows one open cursor per session; retl opens one
CONNECT_TIMEOUT_S = 15
READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction

# PostgreSQL type OIDs (Redshift reports the same ones) -> Arrow; every other type is
# fetched as its text.
_ARROW = {
    16: pa.bool_(),
    20: pa.int64(), 21: pa.int16(), 23: pa.int32(),
    700: pa.float32(), 701: pa.float64(),
    25: pa.string(), 1043: pa.string(), 1042: pa.string(), 19: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
}
_NUMERIC = 1700
_NATIVE = set(_ARROW) | {_NUMERIC}


class RedshiftSource:
    def __init__(self, name: str, host: str, port: int, database: str,
                 auth: PasswordAuth | IamAuth, sslmode: str = "require",
                 schema: str | None = None):
        self.name = name
        self.host = host
        self.port = port
        self.database = database
        self.sslmode = sslmode
        self.schema = schema
        self._auth = auth  # may hold the password: never log it

    def __repr__(self) -> str:
        return (f"RedshiftSource({self.name!r}, {self.host}:{self.port}/{self.database}, "
                f"sslmode={self.sslmode})")

    # ------------------------------------------------------------------ session

    @contextmanager
    def _session(self) -> Iterator:
        """A connection whose one transaction is read-only; rolled back and closed on exit."""
        import psycopg
        from psycopg.types.string import TextLoader

        login = self._auth.login(self.name, self.database)
        failure = None
        try:
            con = psycopg.connect(
                host=self.host, port=self.port, dbname=self.database, user=login.user,
                password=login.password, sslmode=self.sslmode,
                connect_timeout=CONNECT_TIMEOUT_S, application_name="retl", autocommit=False)
        except psycopg.Error as e:
            failure = _first_line(e)  # e holds the password (e.pgconn): keep only its text
        if failure is not None:
            raise SourceError(f"source {self.name!r}: {self.host}:{self.port} database "
                              f"{self.database!r}: {refused_connection(_scrub(failure, login))}")
        try:
            con.read_only = True  # psycopg opens the transaction with BEGIN READ ONLY
            for t in psycopg.postgres.types:  # all but the types mapped above: their text
                for oid in (t.oid, t.array_oid):
                    if oid and oid not in _NATIVE:
                        con.adapters.register_loader(oid, TextLoader)
            try:
                if self.schema:
                    con.execute(psycopg.sql.SQL("SET search_path TO {}").format(
                        psycopg.sql.Identifier(self.schema)))
            except psycopg.Error as e:
                failure = f"source {self.name!r}: cannot set search_path: {_first_line(e)}"
            if failure is not None:
                raise SourceError(failure)
            yield con
        finally:
            con.close()

    # ------------------------------------------------------------------- stream

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        import psycopg

        with self._session() as con:
            cur = con.cursor()
            failure = None
            try:
                cur.execute(f"DECLARE {CURSOR} CURSOR FOR\n{sql.strip().rstrip(';')}")
                cur.execute(f"FETCH FORWARD {FETCH_ROWS} FROM {CURSOR}")
                first = cur.fetchall()  # at most FETCH_ROWS rows: this FETCH's, not the query's
            except psycopg.Error as e:
                failure = self._query_error(e)
            if failure is not None:
                raise failure
            schema, converters = _arrow_schema(cur.description)
            yield pa.RecordBatchReader.from_batches(
                schema, self._batches(cur, first, schema, converters))

    def _batches(self, cur, first: list[tuple], schema: pa.Schema,
                 converters: list) -> Iterator[pa.RecordBatch]:
        import psycopg

        pending = first
        more = len(first) == FETCH_ROWS
        while True:
            while more and len(pending) < BATCH_ROWS:
                failure = None
                try:
                    cur.execute(f"FETCH FORWARD {FETCH_ROWS} FROM {CURSOR}")
                    rows = cur.fetchall()
                except psycopg.Error as e:
                    failure = self._query_error(e)
                if failure is not None:
                    raise failure
                pending.extend(rows)
                more = len(rows) == FETCH_ROWS
            if not pending:
                return
            chunk, pending = pending[:BATCH_ROWS], pending[BATCH_ROWS:]
            yield self._batch(chunk, schema, converters)
            if not pending and not more:
                return

    def _batch(self, rows: list[tuple], schema: pa.Schema, converters: list) -> pa.RecordBatch:
        columns = list(zip(*rows))
        try:
            arrays = [convert(list(values)) for convert, values in zip(converters, columns)]
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as e:
            raise SourceError(f"source {self.name!r}: a value does not fit its column's "
                              f"type: {e}") from None
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _query_error(self, e: Exception) -> SourceError:
        code = getattr(e, "sqlstate", None)
        if code == READ_ONLY_SQLSTATE:
            return SourceError(f"source {self.name!r}: the session is read-only and the query "
                               f"tried to write: {_first_line(e)}")
        return SourceError(f"source {self.name!r}: query failed: {_first_line(e)}")

    # -------------------------------------------------------------------- check

    def check(self, tables: Iterable[str]) -> Check:
        import psycopg

        tables = list(tables)
        where = f"{self.host}:{self.port} database {self.database!r}"
        try:
            with self._session() as con:
                cur = con.cursor()
                cur.execute("SELECT 1")
                if self.schema:
                    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
                    if cur.fetchone() is None:
                        return Check(False, f"source {self.name!r}: {sqlstate_meaning('3F000')}:"
                                            f" {self.schema!r} (in {where})")
                for table in tables:
                    try:
                        cur.execute(probe_sql(table))
                    except psycopg.Error as e:
                        meaning = sqlstate_meaning(e.sqlstate) or "cannot read it"
                        return Check(False, f"source {self.name!r}: table {table}: {meaning} "
                                            f"({_first_line(e)})")
        except SourceError as e:
            return Check(False, e.description)
        except psycopg.Error as e:
            meaning = sqlstate_meaning(e.sqlstate) or "failed"
            return Check(False, f"source {self.name!r}: {meaning} ({_first_line(e)})")
        return Check(True, f"source {self.name!r}: connected to {where}; "
                           f"{len(tables)} table(s) readable")


def _arrow_schema(description) -> tuple[pa.Schema, list]:
    fields, converters = [], []
    for col in description:
        if col.type_code == _NUMERIC:
            if col.precision is not None and col.scale is not None and 0 < col.precision <= 38:
                target = pa.decimal128(col.precision, col.scale)
                converters.append(_plain(target))
            else:  # unconstrained NUMERIC: no fixed scale to keep
                target = pa.float64()
                converters.append(_as_float)
        else:
            target = _ARROW.get(col.type_code, pa.string())
            converters.append(_plain(target))
        fields.append(pa.field(col.name, target))
    return pa.schema(fields), converters


def _plain(target: pa.DataType):
    return lambda values: pa.array(values, type=target)


def _as_float(values: list) -> pa.Array:
    return pa.array([None if v is None else float(v) for v in values], type=pa.float64())


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _scrub(text: str, login: Login) -> str:
    """libpq never echoes the password; should a message ever hold it, it is masked."""
    if login.password and len(login.password) >= 6:
        return text.replace(login.password, "***")
    return text
