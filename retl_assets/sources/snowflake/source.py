"""Snowflake through its Python connector: one query per session, its Arrow chunks streamed.

The connection is opened by dagster-snowflake's `SnowflakeResource.get_connection()`, which
builds `snowflake.connector.connect(...)` from its fields (key-pair PEM loading included) and
passes `additional_snowflake_connection_args` through untouched: that is how `host`, `port`,
`protocol` (PrivateLink, local servers), the session parameters and the Arrow options reach
the connector. The resource holds the secrets, so it is built per session and never kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import Check, CursorSession, probe_sql, rebatch, sync_log_columns
from retl_assets.state.engine import quote

# Session parameters retl pins. MULTI_STATEMENT_COUNT=1 is Snowflake's default; pinning it
# here keeps an account- or user-level override (0 = any number) from letting a model's SQL
# run a second statement. QUERY_TAG marks retl's queries in QUERY_HISTORY.
SESSION_PARAMETERS = {"MULTI_STATEMENT_COUNT": 1, "QUERY_TAG": "retl"}

# The connector's own errnos (snowflake.connector.errorcode) for a server never reached.
_UNREACHABLE = {250001, 250003, 251011}  # failed to connect / request failed / timeout
_BAD_KEY = 251008  # ER_INVALID_PRIVATE_KEY: the PEM could not be read
# Snowflake's errnos for a statement (documented with each error's message).
_NO_OBJECT = {2003, 2043}  # "does not exist or not authorized": Snowflake says no more
_NO_PRIVILEGE = 3001  # "Insufficient privileges to operate on ..."
_NO_WAREHOUSE = 606  # "No active warehouse selected in the current session"
_NO_DATABASE = 90105  # "This session does not have a current database"
_NO_SCHEMA = 90106  # "This session does not have a current schema"


@dataclass(frozen=True)
class Login:
    """The secrets, read when the source was opened; shown nowhere."""

    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    private_key_path: str | None = None
    passphrase: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "Login(<hidden>)"


class SnowflakeSource:
    dialect = "snowflake"

    def __init__(self, name: str, config: Any, login: Login):
        self.name = name
        # Kept without its secrets (a literal in the project file would show in its repr);
        # they live in `login`, already read.
        self._config = config.model_copy(update={
            "password": None, "private_key": None, "private_key_passphrase": None})
        self._login = login

    def __repr__(self) -> str:
        return f"SnowflakeSource({self.name!r}, account={self._config.account!r})"

    # ------------------------------------------------------------ connection

    def _where(self) -> str:
        c = self._config
        host = c.host or f"{c.account}.snowflakecomputing.com"
        return f"{c.protocol or 'https'}://{host}:{c.port or 443}"

    def _connect_args(self) -> dict[str, Any]:
        """SnowflakeResource's fields for this source (secrets included: never log this)."""
        c, login = self._config, self._login
        extra: dict[str, Any] = {
            "session_parameters": dict(SESSION_PARAMETERS),
            # NUMBER(p,s) with s > 0 as decimal128(p,s) (the connector's default is float64).
            "arrow_number_to_decimal": True,
        }
        for key in ("host", "port", "protocol"):
            if getattr(c, key) is not None:
                extra[key] = getattr(c, key)
        args: dict[str, Any] = {
            "account": c.account, "user": c.user,
            "password": login.password, "private_key": login.private_key,
            "private_key_path": login.private_key_path,
            "private_key_password": login.passphrase,
            "role": c.role, "warehouse": c.warehouse, "database": c.database,
            "schema": c.schema_,
            "autocommit": True,  # reads only; and the resource then skips its COMMIT
            "login_timeout": c.login_timeout, "network_timeout": c.network_timeout,
            # The server refuses the login when database, schema or warehouse is not there.
            "validate_default_parameters": True,
            "additional_snowflake_connection_args": extra,
        }
        return {k: v for k, v in args.items() if v is not None}

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        from dagster_snowflake import SnowflakeResource
        from snowflake.connector import errors

        try:
            resource = SnowflakeResource(**self._connect_args())
        except Exception as e:  # its validation errors would quote the fields: never shown
            raise SourceError(f"source {self.name!r}: invalid Snowflake settings "
                              f"({type(e).__name__})") from None
        opening = resource.get_connection()
        try:
            con = opening.__enter__()
        except errors.Error as e:
            raise SourceError(f"source {self.name!r}: {self._login_meaning(e)}") from None
        except (ValueError, TypeError) as e:  # the resource loads the key (no key text in these)
            what = ("the private key could not be read"
                    if self._login.private_key or self._login.private_key_path
                    else "invalid Snowflake settings")
            raise SourceError(f"source {self.name!r}: {what}: {_first_line(e)}") from None
        except OSError as e:
            raise SourceError(f"source {self.name!r}: cannot read the private key file: "
                              f"{e.strerror}") from None
        try:
            yield con
        finally:
            # The resource's get_connection closes only when its block ends without an error.
            con.close()

    def _login_meaning(self, e: Any) -> str:
        errno, sqlstate = getattr(e, "errno", None), getattr(e, "sqlstate", None) or ""
        first = _first_line(e)
        if sqlstate.startswith("28"):  # the connector marks a credential rejection 28000
            return f"Snowflake refused the credentials of user {self._config.user!r}: {first}"
        if errno in _UNREACHABLE:
            return f"cannot reach Snowflake at {self._where()}: {first}"
        if errno == _BAD_KEY:
            return f"the private key could not be read: {first}"
        # Any other refused login: the server names what it did not find (with
        # validate_default_parameters: the database, schema, warehouse or role).
        return f"Snowflake refused the session: {first}"

    # --------------------------------------------------------------- stream

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        from snowflake.connector import errors

        with self._connection() as con:
            cur = con.cursor()
            try:
                # One statement: no num_statements, so MULTI_STATEMENT_COUNT=1 holds.
                cur.execute(sql)
                reader = _arrow_reader(cur, self.name)
            except errors.Error as e:
                raise SourceError(f"source {self.name!r}: query failed: {_first_line(e)}") \
                    from None
            yield rebatch(reader)

    # ------------------------------------------------------- in-warehouse diff

    @contextmanager
    def state_session(self, schema: str, model: str) -> Iterator[SnowflakeState]:
        """A session that writes `database.schema` (retl's own), for `diff: in_warehouse`.
        The schema is made in a session of its own: Snowflake's CREATE SCHEMA also makes it
        the session's current schema, and the model's names must resolve as configured."""
        database = self._config.database
        if not database:
            raise SourceError(f"source {self.name!r}: `diff: in_warehouse` keeps its tables "
                              "in the source's database: give `database`")
        state = SnowflakeState(self.name, None, database, schema)
        with self._connection() as con:
            state._con = con
            if schema not in {r[0] for r in state.rows(
                    f"SELECT schema_name FROM {quote(database)}.information_schema."
                    f"schemata")}:
                with self._connection() as other:
                    SnowflakeState(self.name, other, database, schema).execute(
                        f"CREATE SCHEMA IF NOT EXISTS {quote(database)}."
                        f"{quote(schema)}")
            yield state

    def append_sync_log(self, schema: str, table: str, parquet: Path, cutoff: datetime) -> int:
        """Snowflake's bulk load: PUT the run's Parquet file on a stage of retl's schema,
        COPY INTO the log table (PURGE empties the stage), then drop rows before `cutoff`."""
        with self.state_session(schema, "sync_log") as state:
            target = state.table(table)
            stage = "@" + state.table(f"{table}_stage")
            state.execute(f"CREATE TABLE IF NOT EXISTS {target} "
                          f"({sync_log_columns('VARCHAR', 'TIMESTAMP_TZ')})")
            state.execute(f"CREATE STAGE IF NOT EXISTS {state.table(table + '_stage')}")
            file = str(parquet.resolve()).replace("'", "\\'")
            state.execute(f"PUT 'file://{file}' {stage} AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
            loaded = state.rows(f"COPY INTO {target} FROM {stage} FILE_FORMAT = (TYPE = PARQUET) "
                                "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE")
            state.execute(f"DELETE FROM {target} WHERE \"logged_at\" < "
                          f"'{cutoff.isoformat()}'::TIMESTAMP_TZ")
            # COPY answers one row per file: (file, status, rows parsed, rows loaded, ...).
            return sum(int(r[3] or 0) for r in loaded if len(r) > 3)

    def version(self, tables: Iterable[str]) -> dict[str, object]:
        """When each table last changed (SYSTEM$LAST_CHANGE_COMMIT_TIME): what the model's
        `source_changed` sensor compares between ticks."""
        out: dict[str, object] = {}
        with self._connection() as con:
            state = SnowflakeState(self.name, con, self._config.database or "", "")
            for table in tables:
                literal = table.replace("'", "''")
                out[table] = state.rows(f"SELECT SYSTEM$LAST_CHANGE_COMMIT_TIME('{literal}')")[0][0]
        return out

    # ---------------------------------------------------------------- check

    def check(self, tables: Iterable[str]) -> Check:
        from snowflake.connector import errors

        where = f"source {self.name!r} (Snowflake account {self._config.account})"
        tables = list(tables)
        try:
            with self._connection() as con:
                cur = con.cursor()
                try:
                    cur.execute("SELECT 1")
                except errors.Error as e:
                    return Check(False, f"{where}: signed in, but cannot run a query: "
                                        f"{_query_meaning(e)}")
                missing = self._missing_context(cur)
                if missing:
                    return Check(False, f"{where}: {missing}")
                for table in tables:
                    try:
                        cur.execute(probe_sql(table))
                    except errors.Error as e:
                        return Check(False, f"{where}: table {table}: "
                                            f"{self._probe_meaning(e)}")
        except SourceError as e:
            return Check(False, e.description.replace(f"source {self.name!r}", where, 1))
        read = f"; can read {', '.join(tables)}" if tables else ""
        return Check(True, f"{where}: connected{read}")

    def _probe_meaning(self, e: Any) -> str:
        c, errno = self._config, getattr(e, "errno", None)
        for code, kind, value in ((_NO_DATABASE, "database", c.database),
                                  (_NO_SCHEMA, "schema", c.schema_)):
            if errno == code:
                if value:
                    return (f"no such {kind} {value!r}, or the role cannot use it "
                            f"({_first_line(e)})")
                return f"no {kind} is set: give `{kind}` or qualify the table ({_first_line(e)})"
        return _query_meaning(e)

    def _missing_context(self, cur: Any) -> str | None:
        """Snowflake may open a session whose database or schema is not there (or not
        granted) and leave it unset; say so rather than fail later on every table."""
        from snowflake.connector import errors

        c = self._config
        try:
            cur.execute("SELECT CURRENT_DATABASE(), CURRENT_SCHEMA()")
            database, schema = cur.fetchone()
        except errors.Error:
            return None  # cannot tell: the table probes will say
        if c.database and not database:
            return f"no such database {c.database!r} (or the role {c.role or ''} cannot use it)"
        if c.schema_ and not schema:
            return f"no such schema {c.schema_!r} (or the role {c.role or ''} cannot use it)"
        return None


class SnowflakeState(CursorSession):
    dialect = "snowflake"

    def __init__(self, name: str, con: Any, database: str, schema: str):
        self.name, self._con, self._database, self._schema = name, con, database, schema

    def table(self, name: str) -> str:
        return ".".join(quote(p) for p in (self._database, self._schema, name))

    def tables(self) -> list[str]:
        schema = self._schema.replace("'", "''")
        return [r[0] for r in self.rows(
            f"SELECT table_name FROM {quote(self._database)}.information_schema.tables "
            f"WHERE table_schema = '{schema}'")]

    def fingerprint(self, columns: list[str]) -> str:
        # NULL-safe, and typed: HASH(7) <> HASH('7'). As text: fakesnow answers HASH with an
        # unsigned 64-bit value that Snowflake's NUMBER cannot carry (Snowflake's own is signed).
        return f"TO_VARCHAR(HASH({', '.join(columns)}))"

    def _reader(self, cursor: Any) -> pa.RecordBatchReader:
        return rebatch(_arrow_reader(cursor, self.name))

    def _cursor(self, sql: str) -> Any:
        from snowflake.connector import errors

        cur = self._con.cursor()
        try:
            cur.execute(sql)
        except errors.Error as e:
            cur.close()
            raise SourceError(f"source {self.name!r}: {_first_line(e)}") from None
        return cur


def _arrow_reader(cur: Any, name: str) -> pa.RecordBatchReader:
    """The cursor's result as a reader; built from the description when there are no rows
    (fetch_arrow_batches yields nothing then)."""
    from snowflake.connector import errors

    tables = iter(cur.fetch_arrow_batches())
    first = next(tables, None)
    if first is None:
        return pa.RecordBatchReader.from_batches(schema_of(cur.description), iter(()))
    first = _widen(first)
    schema = first.schema

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for table in chain([first], tables):
                table = _widen(table)
                if not table.schema.equals(schema, check_metadata=False):
                    table = table.cast(schema)
                yield from table.to_batches()
        except errors.Error as e:  # a later chunk failed to download
            raise SourceError(f"source {name!r}: reading the result failed: "
                              f"{_first_line(e)}") from None

    return pa.RecordBatchReader.from_batches(schema, batches())


def _widen(table: pa.Table) -> pa.Table:
    """NUMBER(p,0) as int64 in every chunk: Snowflake may send a chunk's integers narrower."""
    for i, f in enumerate(table.schema):
        if pa.types.is_integer(f.type) and f.type != pa.int64():
            table = table.set_column(i, pa.field(f.name, pa.int64(), f.nullable, f.metadata),
                                     table.column(i).cast(pa.int64()))
    return table


def schema_of(description: Any) -> pa.Schema:
    """Arrow types for the cursor's columns, as fetch_arrow_batches gives them."""
    from snowflake.connector.constants import FIELD_ID_TO_NAME

    fields = []
    for col in description or []:
        kind = FIELD_ID_TO_NAME.get(col.type_code, "TEXT")
        fields.append(pa.field(col.name, _arrow_type(kind, col.precision, col.scale),
                               bool(col.is_nullable)))
    return pa.schema(fields)


def _arrow_type(kind: str, precision: int | None, scale: int | None) -> pa.DataType:
    unit = _unit(scale)
    if kind == "FIXED":
        if not scale:
            return pa.int64()
        return pa.decimal128(precision or 38, scale)
    return {
        "REAL": pa.float64(),
        "DATE": pa.date32(),
        "TIMESTAMP": pa.timestamp(unit),
        "TIMESTAMP_NTZ": pa.timestamp(unit),
        "TIMESTAMP_LTZ": pa.timestamp(unit, tz="UTC"),
        "TIMESTAMP_TZ": pa.timestamp(unit, tz="UTC"),
        "TIME": pa.time64("ns") if unit == "ns" else pa.time64("us"),
        "BOOLEAN": pa.bool_(),
        "BINARY": pa.binary(),
    }.get(kind, pa.string())  # TEXT, VARIANT, OBJECT, ARRAY, GEOGRAPHY...: text


def _unit(scale: int | None) -> str:
    scale = 9 if scale is None else scale
    return "s" if scale == 0 else "ms" if scale <= 3 else "us" if scale <= 6 else "ns"


def _query_meaning(e: Any) -> str:
    errno, sqlstate = getattr(e, "errno", None), getattr(e, "sqlstate", None) or ""
    first = _first_line(e)
    if errno in _NO_OBJECT or sqlstate == "42S02":
        return f"no such table, or the role has no grant to read it ({first})"
    if errno == _NO_PRIVILEGE or sqlstate == "42501":
        return f"the role lacks a grant to read it ({first})"
    if errno == _NO_WAREHOUSE:
        return f"no warehouse is active: set `warehouse` and grant the role USAGE on it ({first})"
    return first


def _first_line(e: Any) -> str:
    # The connector's message: its code, sqlstate and the server's words; never the login.
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
