"""Stream a model's rows into a staged snapshot, fingerprinting each row, and check its keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from retl_assets.errors import ModelError, SourceError
from retl_assets.state.engine import connect, quote
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


def fingerprint_sql(names: list[str]) -> str:
    # DuckDB's hash() is vectorised; a change of any value (NULLs included) changes it.
    return f"hash({', '.join(quote(n) for n in names)})"


def stage(model: str, keys: list[str], reader: pa.RecordBatchReader, path: Path,
          spill_dir: Path) -> Staged:
    """Write the reader's rows plus a fingerprint to `path` (moved into place whole)."""
    names = reader.schema.names
    _check_columns(model, keys, names)
    missing = [k for k in keys if k not in names]
    tmp = temp_path(path)
    con = connect(spill_dir)
    started = time.monotonic()
    try:
        con.register("extract", reader)
        con.execute(
            f"COPY (SELECT *, {fingerprint_sql(names)} AS {FP} FROM extract) "
            f"TO {sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"
        )
    except duckdb.Error as e:
        remove(tmp)
        raise SourceError(f"model {model!r}: reading the query result failed: {e}") from None
    except Exception:
        remove(tmp)
        raise
    elapsed = time.monotonic() - started
    tmp.replace(path)
    try:
        report = check_keys(con, path, keys, missing)
        cols = [(n, t) for n, t in _describe(con, path) if n != FP]
    finally:
        con.close()
    return Staged(path, report.rows, cols, elapsed, report)


def _check_columns(model: str, keys: list[str], names: list[str]) -> None:
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
    rows = con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
    if missing:
        return KeyReport(rows, 0, 0, [], missing)
    cols = ", ".join(quote(k) for k in keys)
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in keys)
    null_keys = con.execute(f"SELECT count(*) FROM {src} WHERE {nulls}").fetchone()[0]
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
