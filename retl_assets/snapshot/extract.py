"""Stream a model's rows into a staged snapshot, fingerprinting each row, and check its keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from retl_assets.errors import ModelError, SourceError
from retl_assets.sources import Source
from retl_assets.sources.duckdb.source import DuckDBSource
from retl_assets.state.engine import connect, memory_limit, quote
from retl_assets.state.files import remove, sql_path, temp_path
from retl_assets.state.store import FP, PREFIX


@dataclass(frozen=True)
class KeyReport:
    rows: int
    null_keys: int
    duplicate_keys: int
    duplicate_sample: list[str]
    missing_keys: list[str]

    @property
    def ok(self) -> bool:
        return not (self.null_keys or self.duplicate_keys or self.missing_keys)


@dataclass(frozen=True)
class Staged:
    path: Path
    rows: int
    columns: list[tuple[str, str]]  # (name, type), fingerprint excluded
    query_seconds: float
    keys: KeyReport | None = None


def load_staged(path: Path) -> Staged:
    """A staged snapshot written earlier in the run, read back from its Parquet footer."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    schema = pq.read_schema(path)
    cols = [(f.name, str(f.type)) for f in schema if f.name != FP]
    return Staged(path, meta.num_rows, cols, 0.0)


# DuckDB's hash() is vectorised, but its values may change between DuckDB releases; the
# committed snapshot records which one made it, so the diff can re-fingerprint the base.
FINGERPRINT = f"duckdb-hash/{duckdb.__version__}/sorted"


def fingerprint_sql(names: list[str]) -> str:
    """A change of any value (NULLs included) changes it; the order of columns does not."""
    return f"hash({', '.join(quote(n) for n in sorted(names))})"


# The full extract is written once and read back by column: a fast codec beats a dense one.
STAGED_PARQUET = "FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 122880"


@dataclass(frozen=True)
class Limits:
    """How big a model's result may be; the project file raises them per model."""

    rows: int = 40_000_000
    columns: int = 300


def stage(model: str, keys: list[str], source: Source, sql: str, path: Path,
          spill_dir: Path, limits: Limits = Limits()) -> Staged:
    """Run the model's query and write its rows plus a fingerprint to `path`, whole.
    Reads at most one row past `limits.rows`, so a runaway query stops early."""
    tmp = temp_path(path)
    started = time.monotonic()
    try:
        if isinstance(source, DuckDBSource):
            # Same engine: copy straight from the warehouse, no Arrow hop in between.
            with source.connect() as con:
                con.execute("SET preserve_insertion_order = false")
                con.execute(f"SET memory_limit = '{memory_limit()}'")
                con.execute(f"SET temp_directory = {sql_path(spill_dir)}")
                try:
                    names = con.sql(sql).columns
                except duckdb.Error as e:
                    raise SourceError(f"model {model!r}: query failed on source "
                                      f"{source.name!r}: {e}") from None
                check_columns(model, keys, names, limits)
                _copy(con, model, source.name, f"(\n{sql}\n)", names, tmp, limits)
        else:
            with source.stream(sql) as reader:
                names = reader.schema.names
                check_columns(model, keys, names, limits)
                con = connect(spill_dir)
                try:
                    con.register("extract", reader)
                    _copy(con, model, source.name, "extract", names, tmp, limits)
                finally:
                    con.close()
    except BaseException:
        remove(tmp)
        raise
    elapsed = time.monotonic() - started
    _check_rows(model, tmp, limits)
    tmp.replace(path)
    con = connect(spill_dir)
    try:
        report = check_keys(con, path, keys, [k for k in keys if k not in names])
        cols = [(n, t) for n, t in _describe(con, path) if n != FP]
    finally:
        con.close()
    return Staged(path, report.rows, cols, elapsed, report)


def _copy(con: duckdb.DuckDBPyConnection, model: str, source: str, relation: str,
          names: list[str], out: Path, limits: Limits) -> None:
    try:
        con.execute(f"COPY (SELECT *, {fingerprint_sql(names)} AS {FP} FROM "
                    f"(SELECT * FROM {relation} LIMIT {limits.rows + 1}) AS q) "
                    f"TO {sql_path(out)} ({STAGED_PARQUET})")
    except duckdb.Error as e:
        raise SourceError(f"model {model!r}: query failed on source {source!r}: {e}") from None


def _check_rows(model: str, staged: Path, limits: Limits) -> None:
    import pyarrow.parquet as pq

    if pq.read_metadata(staged).num_rows > limits.rows:
        remove(staged)
        raise ModelError(row_limit_error(model, limits))


def row_limit_error(model: str, limits: Limits) -> str:
    return (f"model {model!r}: the query returns more than {limits.rows:,} rows, the limit; "
            f"nothing was committed. Filter the model, or raise the limit with "
            f"`max_rows: N` on models.{model} in the project file")


def check_columns(model: str, keys: list[str], names: list[str], limits: Limits) -> None:
    if len(names) > limits.columns:
        raise ModelError(
            f"model {model!r}: the query returns {len(names)} columns, more than the limit of "
            f"{limits.columns}; nothing was committed. Select fewer columns, or raise the "
            f"limit with `max_columns: N` on models.{model} in the project file")
    reserved = [n for n in names if n.startswith(PREFIX)]
    if reserved:
        raise ModelError(f"model {model!r}: column names starting with {PREFIX} are reserved: "
                         f"{', '.join(reserved)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ModelError(f"model {model!r}: the query returns duplicate column names "
                         f"{', '.join(dupes)}; alias them apart")


def _describe(con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in
            con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(path)})").fetchall()]


def check_keys(con: duckdb.DuckDBPyConnection, path: Path, keys: list[str],
               missing: list[str]) -> KeyReport:
    src = f"read_parquet({sql_path(path)})"
    if missing:
        rows = con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        return KeyReport(rows, 0, 0, [], missing)
    cols = ", ".join(quote(k) for k in keys)
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in keys)
    rows, null_keys, distinct = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {nulls}), count(DISTINCT ({cols})) "
        f"FROM (SELECT {cols} FROM {src})").fetchone()
    if rows - null_keys == distinct:
        return KeyReport(rows, null_keys, 0, [], [])
    dup = con.execute(
        f"SELECT concat_ws(', ', {cols}) AS k, count(*) AS n FROM {src} "
        f"GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC LIMIT 5"
    ).fetchall()
    dup_total = 0
    if dup:
        dup_total = con.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {src} GROUP BY {cols} HAVING count(*) > 1)"
        ).fetchone()[0]
    return KeyReport(rows, null_keys, dup_total, [str(r[0]) for r in dup], [])


def key_error(model: str, keys: list[str], report: KeyReport, columns: list[str]) -> str:
    key = ", ".join(keys)
    if report.missing_keys:
        return (f"model {model!r}: primary key column {', '.join(report.missing_keys)} is not in "
                f"the query result (columns: {', '.join(columns)})")
    parts = []
    if report.null_keys:
        parts.append(f"{report.null_keys} rows have a NULL primary key ({key})")
    if report.duplicate_keys:
        parts.append(f"{report.duplicate_keys} primary key values ({key}) appear more than once, "
                     f"e.g. {'; '.join(report.duplicate_sample)}")
    return f"model {model!r}: " + " and ".join(parts) + "; the snapshot was not committed"
