"""Speed of retl, printed as figures (a benchmark, not a test).

    python benchmarks/bench_sync.py --rows 1000000 5000000     # snapshot + diff
    python benchmarks/bench_sync.py --delivery 100000           # encode, batch, send

Snapshot + diff: a 20-column DuckDB model, run as whole `retl sync` processes (Dagster
included): a first run, then a run after 1% of rows changed. Beside it, the floor: DuckDB
itself writing the model with a per-row hash(...) to Parquet. Delivery: a model of N rows
synced to the local Customer.io emulator (its own process, no rate limit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = 20


def in_child(fn, *args):
    """Run heavy DuckDB work in a spawned process: the kernel hands a child the parent's
    peak RSS at fork, so a fat parent would inflate every figure measured after it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def make_warehouse(path: Path, rows: int) -> None:
    cols = ["i AS id"]
    for c in range(1, COLUMNS):
        kind = c % 4
        cols.append(
            f"i * {c} AS n{c}" if kind == 0 else
            f"'value-' || (i % {1000 + c}) AS s{c}" if kind == 1 else
            f"(i % 97) / {c}.0 AS f{c}" if kind == 2 else
            f"TIMESTAMP '2026-01-01' + to_seconds(i % 86400) AS t{c}"
        )
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE OR REPLACE TABLE wide AS SELECT {', '.join(cols)} FROM range({rows}) r(i)")
    con.close()


def change_one_percent(warehouse: Path) -> None:
    con = duckdb.connect(str(warehouse))
    con.execute("SET enable_progress_bar = false")
    con.execute("UPDATE wide SET n4 = n4 + 1 WHERE id % 100 = 0")
    con.close()


def floor_seconds(warehouse: Path, out: Path) -> float:
    con = duckdb.connect(str(warehouse), read_only=True)
    con.execute("SET enable_progress_bar = false")
    names = [r[0] for r in con.execute("DESCRIBE wide").fetchall()]
    started = time.perf_counter()
    con.execute(f"COPY (SELECT *, hash({', '.join(names)}) AS fp FROM wide) TO '{out}' "
                "(FORMAT parquet)")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def retl_sync(env: dict[str, str], model: str) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS in MiB, and the JSON summary of one `retl sync` process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "retl_assets.cli", "sync", model, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    summary = json.loads(out or b"{}")
    if status != 0 or summary.get("status") != "success":
        raise SystemExit(f"retl sync failed: {summary}")
    return elapsed, usage.ru_maxrss / 1024, summary


def project(root: Path, model_sql: str, key: str, syncs: str = "", dest: str = "") -> Path:
    path = root / "retl.yaml"
    path.write_text(f"""
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
destinations: {{{dest}}}
models:
  wide:
    source: warehouse
    primary_key: {key}
    max_delete_fraction: 1.0
    sql: {model_sql}
syncs: {{{syncs}}}
""")
    return path


def environment(root: Path) -> dict[str, str]:
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "RETL_PROJECT": str(root / "retl.yaml"), "DAGSTER_HOME": str(home),
            "PYTHONPATH": str(ROOT)}


def fixed_cost() -> float:
    """Seconds of one `retl sync` of a 10-row model: Python, Dagster and the instance."""
    root = Path(tempfile.mkdtemp(prefix="retl-bench-"))
    try:
        make_warehouse(root / "warehouse.duckdb", 10)
        project(root, "SELECT * FROM wide", "id")
        env = environment(root)
        retl_sync(env, "wide")  # warm the file cache
        return min(retl_sync(env, "wide")[0] for _ in range(2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_snapshot(rows: int, fixed: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="retl-bench-"))
    try:
        in_child(make_warehouse, root / "warehouse.duckdb", rows)
        project(root, "SELECT * FROM wide", "id")
        env = environment(root)
        floor = in_child(floor_seconds, root / "warehouse.duckdb", root / "floor.parquet")
        first, first_mem, s1 = retl_sync(env, "wide")
        in_child(change_one_percent, root / "warehouse.duckdb")
        floor2 = in_child(floor_seconds, root / "warehouse.duckdb", root / "floor.parquet")
        second, second_mem, s2 = retl_sync(env, "wide")
        floor = min(floor, floor2)
        print(f"\n{rows:,} rows x {COLUMNS} columns")
        print(f"  floor (DuckDB COPY with hash to Parquet): {floor:7.2f} s  "
              f"{rows / floor:12,.0f} rows/s")
        print(f"  retl sync, first run:                     {first:7.2f} s  "
              f"{rows / first:12,.0f} rows/s  peak {first_mem:6.0f} MiB  "
              f"{first / floor:4.1f}x floor  (added {s1['added']:,})")
        print(f"  retl sync, 1% changed:                    {second:7.2f} s  "
              f"{rows / second:12,.0f} rows/s  peak {second_mem:6.0f} MiB  "
              f"{second / floor:4.1f}x floor  (updated {s2['updated']:,})")
        print(f"  of which fixed per process (Python, Dagster, instance): {fixed:.2f} s; "
              f"retl's own work: first {(first - fixed) / floor:.1f}x floor, "
              f"1% changed {(second - fixed) / floor:.1f}x floor")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_delivery(rows: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="retl-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = environment(root)
    env["CIO_WRITE_KEY"] = "bench"
    emulator = subprocess.Popen([sys.executable, "-m", "retl_assets.cli", "emulate",
                                 "customerio", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        con = duckdb.connect(str(root / "warehouse.duckdb"))
        con.execute(f"""CREATE TABLE wide AS SELECT 'user-' || i AS "userId",
            'u' || i || '@example.com' AS email, 'Name ' || (i % 1000) AS first_name,
            ['free', 'pro', 'team'][1 + i % 3] AS plan, i % 500 AS seats,
            TIMESTAMP '2026-01-01' + to_seconds(i) AS updated_at FROM range({rows}) r(i)""")
        con.close()
        project(root, "SELECT * FROM wide", '"userId"',
                syncs="wide_identify: {model: wide, destination: cio, action: identify}",
                dest=f"cio: {{type: customerio, write_key: {{env: CIO_WRITE_KEY}}, "
                     f"base_url: 'http://127.0.0.1:{port}'}}")
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        wall, mem, summary = retl_sync(env, "wide")
        sync = summary["syncs"]["wide_identify"]
        print(f"\ndelivery of {rows:,} records to the emulator (no rate limit)")
        print(f"  sync step: {sync['duration_s']:.2f} s, {sync['records_per_s']:,.0f} records/s "
              f"(succeeded {sync['succeeded']:,}); whole process {wall:.2f} s, "
              f"peak {mem:.0f} MiB")
    finally:
        emulator.terminate()
        emulator.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[])
    parser.add_argument("--delivery", type=int, default=0)
    args = parser.parse_args()
    if not args.rows and not args.delivery:
        args.rows, args.delivery = [1_000_000, 5_000_000], 100_000
    fixed = fixed_cost() if args.rows else 0.0
    for rows in args.rows:
        bench_snapshot(rows, fixed)
    if args.delivery:
        bench_delivery(args.delivery)


if __name__ == "__main__":
    main()
