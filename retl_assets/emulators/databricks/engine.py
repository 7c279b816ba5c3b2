"""The warehouse behind the Databricks emulator: Databricks SQL answered by a DuckDB file.

One catalog (`catalog`, "main" by default) holds the DuckDB file's schemas; the Databricks
schema `default` is DuckDB's `main`. A statement is parsed as Databricks SQL by sqlglot, every
table it names is resolved (`catalog.schema.table`, `schema.table` or `table`, against the
statement's `catalog` and `schema`), checked against the allow-list (a missing grant), then
rewritten to DuckDB's `schema.table` and run in a read-only DuckDB connection. Failures carry
Databricks' error class and SQLSTATE (docs/warehouses/databricks.md).

`DESCRIBE HISTORY t [LIMIT n]` answers a Delta table's history: the version grows by one each
time the table's contents (or columns) differ from the last time anyone asked.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

ARROW_TZ = "Etc/UTC"  # the zone of TIMESTAMP values in Databricks' Arrow results


class SqlFailure(Exception):
    """A statement the warehouse refused: FAILED, with Databricks' error class and SQLSTATE."""

    def __init__(self, error_class: str, sql_state: str, detail: str,
                 error_code: str = "BAD_REQUEST") -> None:
        self.error_class = error_class
        self.sql_state = sql_state
        self.error_code = error_code  # status.error.error_code (the SDK's ServiceErrorCode)
        self.message = f"[{error_class}] {detail} SQLSTATE: {sql_state}"
        super().__init__(self.message)


@dataclass
class _Version:
    fingerprint: tuple
    version: int
    history: list[tuple[int, datetime, str]]  # (version, timestamp, operation), newest last


HISTORY = re.compile(r"^\s*DESCRIBE\s+HISTORY\s+(?P<table>[^\s;]+)(?:\s+LIMIT\s+(?P<limit>\d+))?"
                     r"\s*;?\s*$", re.IGNORECASE)


class Warehouse:
    """Runs Databricks SQL against a DuckDB file, read-only.

    allowed_tables: fully qualified names (`catalog.schema.table`, any case) the token may
        read; None lets it read every table. Others fail INSUFFICIENT_PERMISSIONS (42501).
    """

    def __init__(self, database: str | Path, catalog: str = "main",
                 allowed_tables: set[str] | None = None) -> None:
        self.database = Path(database)
        self.catalog = catalog
        self.allowed_tables = ({t.lower() for t in allowed_tables}
                               if allowed_tables is not None else None)
        self._versions: dict[str, _Version] = {}
        self._lock = threading.Lock()

    # -- the one entry point ------------------------------------------------------------------

    def run(self, statement: str, catalog: str | None = None,
            schema: str | None = None) -> pa.Table:
        """The statement's rows as Databricks would type them; raises SqlFailure."""
        current_catalog = self._current_catalog(catalog)
        with self._connect() as con:
            current_schema = self._current_schema(con, current_catalog, schema)
            history = HISTORY.match(statement)
            if history:
                return self._history(con, current_catalog, current_schema,
                                     history["table"], history["limit"])
            sql = self._translate(con, statement, current_catalog, current_schema)
            try:
                table = con.sql(sql).to_arrow_table() if sql else pa.table({})
            except duckdb.Error as e:
                raise _duckdb_failure(e) from None
        return databricks_arrow(table)

    # -- names --------------------------------------------------------------------------------

    def _connect(self):
        if not self.database.exists():
            raise SqlFailure("INTERNAL_ERROR", "XX000", "the emulator's DuckDB file is missing.",
                             "INTERNAL_ERROR")
        con = duckdb.connect(str(self.database), read_only=True)
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        return con

    def _current_catalog(self, catalog: str | None) -> str:
        if catalog is not None and catalog.lower() != self.catalog.lower():
            raise SqlFailure("NO_SUCH_CATALOG_EXCEPTION", "42704",
                             f"Catalog '{catalog}' was not found. Please verify the catalog "
                             "name and then retry the query or command again.")
        return self.catalog

    def _current_schema(self, con, catalog: str, schema: str | None) -> str:
        if schema is None:
            return "default"
        if _duck_schema(schema) not in self._schemas(con):
            raise SqlFailure("SCHEMA_NOT_FOUND", "42704",
                             f"The schema `{catalog}`.`{schema}` cannot be found. Verify the "
                             "spelling and correctness of the schema and catalog.")
        return schema

    @staticmethod
    def _schemas(con) -> set[str]:
        rows = con.execute("SELECT DISTINCT lower(schema_name) FROM information_schema.schemata "
                           "WHERE catalog_name = current_database()").fetchall()
        return {r[0] for r in rows}

    @staticmethod
    def _exists(con, schema: str, table: str) -> bool:
        return bool(con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
            [schema, table]).fetchall())

    def _resolve(self, con, table: exp.Table, catalog: str, schema: str) -> tuple[str, str]:
        """(qualified Databricks name, DuckDB schema) of a table, or SqlFailure."""
        cat = table.catalog or catalog
        db = table.db or schema
        shown = f"`{cat}`.`{db}`.`{table.name}`"
        if cat.lower() != self.catalog.lower() or not self._exists(con, _duck_schema(db),
                                                                   table.name):
            raise SqlFailure("TABLE_OR_VIEW_NOT_FOUND", "42P01",
                             f"The table or view {shown} cannot be found. Verify the spelling "
                             "and correctness of the schema and catalog.")
        qualified = f"{cat}.{db}.{table.name}".lower()
        if self.allowed_tables is not None and qualified not in self.allowed_tables:
            raise SqlFailure("INSUFFICIENT_PERMISSIONS", "42501",
                             f"Insufficient privileges: User does not have SELECT on Table "
                             f"{shown}.")
        return qualified, _duck_schema(db)

    def _translate(self, con, statement: str, catalog: str, schema: str) -> str:
        try:
            trees = [t for t in sqlglot.parse(statement, read="databricks") if t is not None]
        except sqlglot.errors.ParseError as e:
            raise SqlFailure("PARSE_SYNTAX_ERROR", "42601",
                             f"Syntax error: {str(e).splitlines()[0]}") from None
        if len(trees) != 1:
            raise SqlFailure("PARSE_SYNTAX_ERROR", "42601",
                             "The Statement Execution API runs exactly one statement.")
        tree = trees[0]
        if not isinstance(tree, exp.Query):
            raise SqlFailure("UNSUPPORTED_FEATURE", "0A000",
                             "The emulator answers queries only (SELECT, WITH, set operations, "
                             "DESCRIBE HISTORY).")
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        for table in list(tree.find_all(exp.Table)):
            if not isinstance(table.this, exp.Identifier):
                continue  # a table function such as range(10)
            if not table.db and table.name.lower() in ctes:
                continue
            _, duck = self._resolve(con, table, catalog, schema)
            table.set("catalog", None)
            table.set("db", exp.to_identifier(duck))
        return tree.sql(dialect="duckdb")

    # -- Delta history ------------------------------------------------------------------------

    def _history(self, con, catalog: str, schema: str, name: str, limit: str | None) -> pa.Table:
        try:
            table = exp.to_table(name, dialect="databricks")
        except sqlglot.errors.ParseError as e:
            raise SqlFailure("PARSE_SYNTAX_ERROR", "42601", str(e).splitlines()[0]) from None
        qualified, duck = self._resolve(con, table, catalog, schema)
        ident = f'"{duck}"."{table.name}"'
        content = con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {ident} t").fetchone()
        columns = con.execute(
            "SELECT string_agg(column_name || ' ' || data_type, ',' ORDER BY ordinal_position) "
            "FROM information_schema.columns WHERE table_catalog = current_database() AND "
            "lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
            [duck, table.name]).fetchone()
        fingerprint = (tuple(content), columns[0])
        now = datetime.now(UTC)
        with self._lock:
            seen = self._versions.get(qualified)
            if seen is None:
                seen = self._versions[qualified] = _Version(fingerprint, 0,
                                                            [(0, now, "CREATE TABLE")])
            elif seen.fingerprint != fingerprint:
                seen.version += 1
                seen.fingerprint = fingerprint
                seen.history.append((seen.version, now, "WRITE"))
            rows = list(reversed(seen.history))
        if limit is not None:
            rows = rows[: int(limit)]
        return pa.table({
            "version": pa.array([r[0] for r in rows], pa.int64()),
            "timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz=ARROW_TZ)),
            "operation": pa.array([r[2] for r in rows], pa.string()),
            "isolationLevel": pa.array(["WriteSerializable"] * len(rows), pa.string()),
            "isBlindAppend": pa.array([False] * len(rows), pa.bool_()),
        })


def _duck_schema(schema: str) -> str:
    return "main" if schema.lower() == "default" else schema.lower()


def _duckdb_failure(error: duckdb.Error) -> SqlFailure:
    first = str(error).strip().splitlines()[0]
    if isinstance(error, duckdb.BinderException) and "column" in first.lower():
        return SqlFailure("UNRESOLVED_COLUMN", "42703", first)
    if isinstance(error, (duckdb.BinderException, duckdb.CatalogException)):
        return SqlFailure("ANALYSIS_ERROR", "42000", first)
    if isinstance(error, duckdb.ParserException):
        return SqlFailure("PARSE_SYNTAX_ERROR", "42601", first)
    if isinstance(error, (duckdb.ConversionException, duckdb.InvalidInputException,
                          duckdb.OutOfRangeException)):
        return SqlFailure("CAST_INVALID_INPUT", "22018", first)
    return SqlFailure("INTERNAL_ERROR", "XX000", first, "INTERNAL_ERROR")


# ------------------------------------------------------------------ types


def databricks_arrow(table: pa.Table) -> pa.Table:
    """The table with the Arrow types Databricks sends (no unsigned ints, no TIME, UTC
    timestamps in microseconds, plain strings and binaries)."""
    fields = [pa.field(f.name, _arrow_type(f.type), True) for f in table.schema]
    schema = pa.schema(fields)
    if schema.equals(table.schema, check_metadata=False):
        return table
    columns = []
    for column, field in zip(table.columns, fields):
        if column.type.equals(field.type):
            columns.append(column)
        elif pa.types.is_time(column.type) or pa.types.is_interval(column.type):
            columns.append(pa.chunked_array(
                [pa.array([None if v is None else str(v) for v in column.to_pylist()],
                          pa.string())], pa.string()))
        else:
            try:
                columns.append(pc.cast(column, field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                columns.append(pa.chunked_array(
                    [pa.array([None if v is None else str(v) for v in column.to_pylist()],
                              pa.string())], pa.string()))
                fields[len(columns) - 1] = pa.field(field.name, pa.string())
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _arrow_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _arrow_type(t.value_type)
    if pa.types.is_uint8(t):
        return pa.int16()
    if pa.types.is_uint16(t):
        return pa.int32()
    if pa.types.is_uint32(t):
        return pa.int64()
    if pa.types.is_uint64(t):
        return pa.decimal128(20, 0)
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_decimal(t):
        return pa.decimal128(min(t.precision, 38), t.scale)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz=ARROW_TZ if t.tz else None)
    if pa.types.is_time(t) or pa.types.is_interval(t) or pa.types.is_duration(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(pa.field(t.value_field.name, _arrow_type(t.value_type)))
    if pa.types.is_map(t):
        return pa.map_(_arrow_type(t.key_type), _arrow_type(t.item_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _arrow_type(f.type)) for f in t])
    return t


def column_info(field: pa.Field, position: int) -> dict:
    """The manifest's description of one column: type_name, type_text (and DECIMAL's
    precision and scale)."""
    name, text = _type_names(field.type)
    info = {"name": field.name, "position": position, "type_name": name, "type_text": text}
    if pa.types.is_decimal(field.type):
        info["type_precision"] = field.type.precision
        info["type_scale"] = field.type.scale
    return info


def _type_names(t: pa.DataType) -> tuple[str, str]:
    simple = [(pa.types.is_boolean, "BOOLEAN", "BOOLEAN"), (pa.types.is_int8, "BYTE", "TINYINT"),
              (pa.types.is_int16, "SHORT", "SMALLINT"), (pa.types.is_int32, "INT", "INT"),
              (pa.types.is_int64, "LONG", "BIGINT"), (pa.types.is_float32, "FLOAT", "FLOAT"),
              (pa.types.is_float64, "DOUBLE", "DOUBLE"), (pa.types.is_string, "STRING", "STRING"),
              (pa.types.is_binary, "BINARY", "BINARY"), (pa.types.is_date32, "DATE", "DATE"),
              (pa.types.is_null, "NULL", "VOID")]
    for test, name, text in simple:
        if test(t):
            return name, text
    if pa.types.is_decimal(t):
        return "DECIMAL", f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return ("TIMESTAMP", "TIMESTAMP") if t.tz else ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ")
    if pa.types.is_list(t):
        return "ARRAY", f"ARRAY<{_type_names(t.value_type)[1]}>"
    if pa.types.is_map(t):
        return "MAP", f"MAP<{_type_names(t.key_type)[1]}, {_type_names(t.item_type)[1]}>"
    if pa.types.is_struct(t):
        inner = ", ".join(f"{f.name}: {_type_names(f.type)[1]}" for f in t)
        return "STRUCT", f"STRUCT<{inner}>"
    return "STRING", "STRING"


def json_rows(table: pa.Table) -> list[list[str | None]]:
    """JSON_ARRAY's data_array: every value as its string form, nulls as null."""
    columns = []
    for column in table.columns:
        t = column.type
        if pa.types.is_timestamp(t):
            values = [None if v is None else v.isoformat().replace("+00:00", "Z")
                      for v in column.to_pylist()]
        elif pa.types.is_boolean(t):
            values = [None if v is None else ("true" if v else "false") for v in column.to_pylist()]
        elif pa.types.is_nested(t):
            import json

            values = [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()]
        else:
            try:
                values = pc.cast(column, pa.string()).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                values = [None if v is None else str(v) for v in column.to_pylist()]
        columns.append(values)
    return [list(row) for row in zip(*columns)] if columns else []


def now_iso(offset_s: float = 0) -> str:
    return datetime.fromtimestamp(time.time() + offset_s, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
