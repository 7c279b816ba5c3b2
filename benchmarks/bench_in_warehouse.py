"""Extract + diff of a DuckDB model, `diff: local` against `diff: in_warehouse` (a benchmark,
not a test).

    python benchmarks/bench_in_warehouse.py [--rows 10000000]

For each mode: a first run, then a run with 1% of rows changed, each a whole `retl sync`
process (no syncs, so extract and diff only). Prints seconds, rows/s, the process's peak RSS,
and how many rows left the warehouse (every row in local mode; in-warehouse mode, the first
run brings the snapshot out once and later runs only the changed rows).

DuckDB runs inside the retl process, so its memory is counted in the peak here either way; on
a remote warehouse (PostgreSQL, Snowflake) in-warehouse mode leaves that work to the server.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import change_one_percent, environment, in_child, make_warehouse, retl_sync  # noqa: E402

import duckdb  # noqa: E402


def write_project(root: Path, diff: str) -> None:
    (root / "retl.yaml").write_text(f"""
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
models:
  wide:
    source: warehouse
    primary_key: id
    diff: {diff}
    max_delete_fraction: 1.0
    sql: SELECT * FROM wide
""")


def rows_out(root: Path, seq: int) -> int:
    """Rows an in-warehouse run brought out: its changeset, plus the full copy it made."""
    model = root / ".retl" / "state" / "models" / "wide"
    files = [model / "log" / f"{seq:09d}.parquet", model / "snapshots" / f"v{seq:09d}.full.parquet"]
    return sum(duckdb.sql(f"SELECT count(*) FROM read_parquet('{f}')").fetchall()[0][0]
               for f in files if f.exists())


def bench(rows: int, diff: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="retl-bench-"))
    try:
        in_child(make_warehouse, root / "warehouse.duckdb", rows)
        write_project(root, diff)
        env = environment(root)
        first, first_mem, s1 = retl_sync(env, "wide")
        out1 = rows_out(root, 1)
        in_child(change_one_percent, root / "warehouse.duckdb")
        second, second_mem, s2 = retl_sync(env, "wide")
        out2 = rows_out(root, 2)
        if diff == "local":
            out1 = out2 = rows  # the whole extract is copied out of the warehouse each run
        print(f"  diff: {diff:12s} first run   {first:7.2f} s {rows / first:12,.0f} rows/s  "
              f"peak {first_mem:6.0f} MiB  rows out {out1:12,}  (added {s1['added']:,})")
        print(f"  diff: {diff:12s} 1% changed  {second:7.2f} s {rows / second:12,.0f} rows/s  "
              f"peak {second_mem:6.0f} MiB  rows out {out2:12,}  (updated {s2['updated']:,})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    print(f"{args.rows:,} rows x 20 columns, DuckDB warehouse")
    for diff in ("local", "in_warehouse"):
        bench(args.rows, diff)


if __name__ == "__main__":
    main()
