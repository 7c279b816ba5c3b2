"""The warehouse behind the BigQuery emulator: a DuckDB file, read through BigQuery's eyes.

A BigQuery dataset is a DuckDB schema, a table is a table of that schema; every project the
emulator serves sees the same file. Queries arrive in BigQuery's SQL and are translated by
sqlglot to DuckDB's; table names (`project.dataset.table`, `dataset.table`, or a bare
`table` under the request's default dataset) are resolved first, so an unknown dataset or
table, or one outside the allow-list, is refused the way BigQuery refuses it.

Results are held as Arrow tables and rendered, page by page, the way the REST API renders
rows: `{"f": [{"v": "<every scalar as a string>"}]}`, arrays as `{"v": [{"v": ...}]}`, records
as `{"v": {"f": [...]}}`, TIMESTAMP as epoch microseconds (formatOptions.useInt64Timestamp)
or as epoch seconds in Java's double notation ("1.7672256E9").
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp


class QueryRefused(Exception):
    """BigQuery would refuse the statement: HTTP status, error reason, message."""

    def __init__(self, status: int, reason: str, message: str, location: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.location = location


@dataclass
class Result:
    """What a finished query left: its rows (None for a statement without rows)."""

    statement_type: str  # SELECT, INSERT, UPDATE, DELETE, MERGE, CREATE_TABLE, DROP_TABLE...
    table: pa.Table | None
    schema: list[dict[str, Any]] = field(default_factory=list)
    affected: int | None = None  # DML
    referenced: list[tuple[str, str]] = field(default_factory=list)  # (dataset, table)


STATEMENT_TYPES = {
    exp.Select: "SELECT", exp.Union: "SELECT", exp.Intersect: "SELECT", exp.Except: "SELECT",
    exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE", exp.Merge: "MERGE",
}
DML = {"INSERT", "UPDATE", "DELETE", "MERGE"}


class Warehouse:
    """A DuckDB file answering BigQuery SQL; `allow` (set of "dataset.table", or "dataset.*")
    limits what may be read, None allows every table."""

    def __init__(self, path: str | Path, allow: set[str] | None = None) -> None:
        self.path = Path(path)
        self.allow = set(allow) if allow is not None else None
        self._lock = threading.Lock()  # one DuckDB connection at a time, opened per call
        self._seen: dict[tuple[str, str], tuple[Any, int, int]] = {}  # print, modified, created

    # -- DuckDB -------------------------------------------------------------------------------

    def _connect(self, write: bool = False) -> duckdb.DuckDBPyConnection:
        if not self.path.exists():
            raise QueryRefused(500, "internalError", "the emulator's DuckDB file is missing")
        # Opened per statement and closed at once: the tests change the file between syncs.
        con = duckdb.connect(str(self.path), read_only=not write)
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        return con

    def datasets(self) -> set[str]:
        with self._lock:
            con = self._connect()
            try:
                rows = con.execute("SELECT DISTINCT schema_name FROM information_schema.schemata "
                                   "WHERE catalog_name = current_database()").fetchall()
            finally:
                con.close()
        return {r[0] for r in rows} - {"information_schema", "pg_catalog"}

    def tables(self, dataset: str) -> set[str]:
        with self._lock:
            con = self._connect()
            try:
                rows = con.execute("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = ? AND table_catalog = current_database()",
                                   [dataset]).fetchall()
            finally:
                con.close()
        return {r[0] for r in rows}

    def allowed(self, dataset: str, table: str) -> bool:
        return self.allow is None or bool({f"{dataset}.{table}", f"{dataset}.*"} & self.allow)

    def describe(self, dataset: str, table: str) -> dict[str, Any]:
        """tables.get's facts: schema, row count, and lastModifiedTime, which moves when the
        table's contents change (DuckDB keeps no such time: the emulator notices changes by a
        fingerprint of the rows, and starts from the file's own mtime)."""
        with self._lock:
            con = self._connect()
            try:
                ident = f'"{_q(dataset)}"."{_q(table)}"'
                arrow_schema = con.sql(f"SELECT * FROM {ident} LIMIT 0").to_arrow_table().schema
                count, digest = con.execute(
                    f"SELECT count(*), sum(hash(t))::VARCHAR FROM {ident} AS t").fetchone()
            finally:
                con.close()
            fingerprint = (count, digest, str(arrow_schema))
            seen = self._seen.get((dataset, table))
            if seen is None:
                created = modified = int(os.path.getmtime(self.path) * 1000)
            else:
                created = seen[2]
                modified = seen[1] if seen[0] == fingerprint else max(
                    int(time.time() * 1000), seen[1] + 1)
            self._seen[(dataset, table)] = (fingerprint, modified, created)
        return {"schema": bq_schema(arrow_schema), "numRows": str(count),
                "lastModifiedTime": str(modified), "creationTime": str(created)}

    def table_rows(self, dataset: str, table: str) -> pa.Table:
        with self._lock:
            con = self._connect()
            try:
                return con.sql(f'SELECT * FROM "{_q(dataset)}"."{_q(table)}"').to_arrow_table()
            finally:
                con.close()

    # -- queries ------------------------------------------------------------------------------

    def run(self, sql: str, project: str, default_dataset: tuple[str, str] | None) -> Result:
        """Run one BigQuery statement; raises QueryRefused as BigQuery would refuse it."""
        try:
            statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
        except sqlglot.errors.ParseError as e:
            first = e.errors[0] if e.errors else {}
            raise QueryRefused(400, "invalidQuery",
                               f"Syntax error: {first.get('description', 'invalid query')} at "
                               f"[{first.get('line', 1)}:{first.get('col', 1)}]", "query") from None
        if len(statements) != 1:
            raise QueryRefused(400, "invalidQuery", "Syntax error: expected exactly one "
                               "statement (the emulator runs no scripts)", "query")
        tree = statements[0]
        kind = _statement_type(tree)
        referenced = self._resolve(tree, project, default_dataset, kind)
        duck = tree.sql(dialect="duckdb")
        write = kind != "SELECT"
        with self._lock:
            con = self._connect(write=write)
            try:
                if kind == "SELECT":
                    table = con.sql(duck).to_arrow_table()
                    return Result("SELECT", table, bq_schema(table.schema), None, referenced)
                rows = con.execute(duck).fetchall()
                affected = None
                if kind in DML:
                    affected = int(rows[0][0]) if rows and rows[0] and rows[0][0] is not None \
                        else 0
                return Result(kind, None, [], affected, referenced)
            except duckdb.Error as e:
                raise QueryRefused(400, "invalidQuery", _first_line(e), "query") from None
            finally:
                con.close()

    def _resolve(self, tree: exp.Expression, project: str,
                 default_dataset: tuple[str, str] | None, kind: str) -> list[tuple[str, str]]:
        """Rewrite every table name to DuckDB's `dataset.table`, refusing as BigQuery does:
        an unqualified name without a default dataset, an unknown dataset or table, a table
        the caller may not read."""
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        datasets = None
        known: dict[str, set[str]] = {}
        referenced = []
        for node in list(tree.find_all(exp.Table)):
            name = node.name
            if not name or (not node.db and name in ctes):
                continue
            if isinstance(node.this, exp.Func) or not isinstance(node.this, exp.Identifier):
                continue  # UNNEST(...) and table functions
            proj = node.catalog or (default_dataset[0] if default_dataset and not node.db
                                    else project)
            dataset = node.db or (default_dataset[1] if default_dataset else None)
            if dataset is None:
                raise QueryRefused(400, "invalidQuery", f'Table "{name}" must be qualified '
                                   "with a dataset (e.g. dataset.table).", "query")
            if datasets is None:
                datasets = self.datasets()
            if dataset not in datasets:
                raise QueryRefused(404, "notFound", f"Not found: Dataset {proj}:{dataset} was "
                                   "not found in location US")
            if dataset not in known:
                known[dataset] = self.tables(dataset)
            creating = kind.startswith("CREATE") and node is tree.this
            if name not in known[dataset] and not creating:
                raise QueryRefused(404, "notFound", f"Not found: Table {proj}:{dataset}.{name} "
                                   "was not found in location US")
            if not self.allowed(dataset, name):
                verb = "query" if kind == "SELECT" else "modify"
                raise QueryRefused(403, "accessDenied", f"Access Denied: Table {proj}:{dataset}."
                                   f"{name}: User does not have permission to {verb} table "
                                   f"{proj}:{dataset}.{name}, or perhaps it does not exist.")
            node.set("catalog", None)
            node.set("db", exp.to_identifier(dataset))
            referenced.append((dataset, name))
        return referenced


def _statement_type(tree: exp.Expression) -> str:
    for cls, name in STATEMENT_TYPES.items():
        if isinstance(tree, cls):
            return name
    if isinstance(tree, (exp.Create, exp.Drop, exp.Alter)):
        verb = {exp.Create: "CREATE", exp.Drop: "DROP", exp.Alter: "ALTER"}[type(tree)]
        what = str(tree.args.get("kind") or "TABLE").upper()
        return f"{verb}_{what}"
    return "SCRIPT"


def _q(name: str) -> str:
    return name.replace('"', '""')


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or ["query failed"])[0]


# ------------------------------------------------------------------ types and values


def bq_field(f: pa.Field) -> dict[str, Any]:
    kind, mode, fields = _bq_type(f.type)
    out: dict[str, Any] = {"name": f.name, "type": kind, "mode": mode}
    if fields:
        out["fields"] = fields
    return out


def bq_schema(schema: pa.Schema) -> list[dict[str, Any]]:
    return [bq_field(f) for f in schema]


def _bq_type(t: pa.DataType) -> tuple[str, str, list | None]:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner, inner_mode, fields = _bq_type(t.value_type)
        if inner_mode == "REPEATED":  # BigQuery has no arrays of arrays
            return "STRING", "NULLABLE", None
        return inner, "REPEATED", fields
    if pa.types.is_struct(t):
        return "RECORD", "NULLABLE", [bq_field(t.field(i)) for i in range(t.num_fields)]
    if pa.types.is_integer(t):
        return "INTEGER", "NULLABLE", None
    if pa.types.is_floating(t):
        return "FLOAT", "NULLABLE", None
    if pa.types.is_decimal(t):
        big = t.scale > 9 or t.precision - t.scale > 29
        return ("BIGNUMERIC" if big else "NUMERIC"), "NULLABLE", None
    if pa.types.is_boolean(t):
        return "BOOLEAN", "NULLABLE", None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES", "NULLABLE", None
    if pa.types.is_date(t):
        return "DATE", "NULLABLE", None
    if pa.types.is_timestamp(t):
        return ("TIMESTAMP" if t.tz else "DATETIME"), "NULLABLE", None
    if pa.types.is_time(t):
        return "TIME", "NULLABLE", None
    return "STRING", "NULLABLE", None  # strings, and what BigQuery has no type for


def encode_rows(table: pa.Table, schema: list[dict[str, Any]],
                int64_timestamp: bool) -> list[dict[str, Any]]:
    """Rows as tabledata.list and getQueryResults send them."""
    columns = []
    for i, f in enumerate(schema):
        column = table.column(i)
        if f["type"] == "TIMESTAMP" and f["mode"] != "REPEATED":
            micros = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
            if int64_timestamp:
                columns.append([None if m is None else str(m) for m in micros])
            else:
                columns.append([None if m is None else java_double(m / 1e6) for m in micros])
        else:
            values = column.to_pylist()
            columns.append([_cell(v, f, int64_timestamp) for v in values])
    return [{"f": [{"v": col[r]} for col in columns]} for r in range(table.num_rows)]


def _cell(value: Any, f: dict[str, Any], int64_timestamp: bool) -> Any:
    if value is None:
        return None
    if f["mode"] == "REPEATED":
        scalar = {**f, "mode": "NULLABLE"}
        return [{"v": _cell(v, scalar, int64_timestamp)} for v in value]
    kind = f["type"]
    if kind == "RECORD":
        return {"f": [{"v": _cell(value.get(sub["name"]), sub, int64_timestamp)}
                      for sub in f["fields"]]}
    if kind == "STRING":
        return value if isinstance(value, str) else str(value)
    if kind == "INTEGER":
        return str(int(value))
    if kind == "FLOAT":
        if math.isnan(value):
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return java_double(float(value))
    if kind in ("NUMERIC", "BIGNUMERIC"):
        text = format(value.normalize(), "f") if isinstance(value, decimal.Decimal) else str(value)
        return text
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "BYTES":
        return base64.standard_b64encode(value).decode()
    if kind in ("DATE", "DATETIME", "TIME"):
        return value.isoformat()
    if kind == "TIMESTAMP":  # inside arrays and records
        micros = int(value.timestamp()) * 1_000_000 + value.microsecond
        return str(micros) if int64_timestamp else java_double(micros / 1e6)
    return str(value)


def java_double(x: float) -> str:
    """A double as BigQuery (Java's Double.toString) writes it: 1.5, 1.7672256E9, 1.0E-4."""
    if x == 0:
        return "0.0" if str(x)[0] != "-" else "-0.0"
    if 1e-3 <= abs(x) < 1e7:
        return repr(x)
    sign, digits, exponent = decimal.Decimal(repr(x)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    power = exponent + len(digits) - 1
    mantissa = text[0] + "." + (text[1:] or "0")
    return ("-" if sign else "") + f"{mantissa}E{power}"


def row_bytes(row: dict[str, Any]) -> int:
    """A row's share of a response's bytes, as JSON (close to what the API counts)."""
    return len(repr(row))


def etag(*parts: Any) -> str:
    return base64.standard_b64encode(hashlib.sha1(repr(parts).encode()).digest()[:12]).decode()
