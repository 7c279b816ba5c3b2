"""Delivery speed per destination (a benchmark, not a test).

    python benchmarks/bench_destinations.py [--rows 100000] [NAME ...]

For each destination: a first sync of N rows to its emulator (its own process), once with the
emulator's rate limit set as the vendor publishes it (retl configured the same), once with the
limit off. Prints records/s, the vendor's ceiling in records/s, and the sync process's peak RSS.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import environment, in_child, retl_sync  # noqa: E402

import duckdb  # noqa: E402


@dataclass(frozen=True)
class Case:
    destination: str  # the YAML of the destination entry, with {url}
    sync: str  # the YAML of the sync entry
    limit: str  # `retl emulate --rate-limit` as the vendor publishes it
    ceiling: float  # records/s the vendor allows at that limit (0: not a time limit)
    emulator_key: str = "bench-key"


SYNC = "{{model: people, destination: dest, {}}}"
CASES = {
    "customerio": Case(
        "{type: customerio, write_key: {env: BENCH_KEY}, base_url: '{url}'}",
        SYNC.format("action: identify"), "3000/3", 3000 / 3 * 2500),
    "hubspot": Case(
        "{type: hubspot, access_token: {env: BENCH_KEY}, base_url: '{url}', "
        "requests_per_10s: 190}",
        SYNC.format("object: contacts, action: upsert, match: {email: email}, "
                    "mapping: {firstname: first_name, plan: plan}"),
        "190/10", 190 / 10 * 100),
    "braze": Case(
        "{type: braze, api_key: {env: BENCH_KEY}, base_url: '{url}'}",
        SYNC.format("action: upsert, match: {external_id: userId}, "
                    "mapping: {email: email, first_name: first_name}"),
        "3000/3", 3000 / 3 * 75),
    "iterable": Case(
        "{type: iterable, api_key: {env: BENCH_KEY}, base_url: '{url}'}",
        SYNC.format("action: upsert, match: {email: email}, "
                    "mapping: {firstName: first_name, plan: plan}"),
        "5/1", 5 * 1000),
    "mixpanel": Case(
        "{type: mixpanel, project_token: {env: BENCH_KEY}, base_url: '{url}'}",
        SYNC.format("action: track, match: {distinct_id: userId}, "
                    "mapping: {event: {value: Signed Up}, time: updated_at, plan: plan}"),
        "1800000/60", 30_000),
    "clevertap": Case(
        "{type: clevertap, account_id: BENCH, passcode: {env: BENCH_KEY}, base_url: '{url}'}",
        SYNC.format("action: profile, match: {identity: userId}, "
                    "mapping: {Email: email, Name: first_name}"),
        "15/1", 0, emulator_key="BENCH:bench-key"),
    "salesforce": Case(
        "{type: salesforce, access_token: {env: BENCH_KEY}, instance_url: '{url}'}",
        SYNC.format("object: Contact, action: upsert, match: {External_Id__c: userId}, "
                    "mapping: {Email: email, LastName: first_name}"),
        "100000/86400", 0),
}


def make_people(path: Path, rows: int) -> None:
    con = duckdb.connect(str(path))
    con.execute("SET enable_progress_bar = false")
    con.execute(f"""CREATE TABLE people AS SELECT 'user-' || i AS "userId",
        'u' || i || '@example.com' AS email, 'Name ' || (i % 1000) AS first_name,
        ['free', 'pro', 'team'][1 + i % 3] AS plan, i % 500 AS seats,
        TIMESTAMP '2026-01-01' + to_seconds(i) AS updated_at FROM range({rows}) r(i)""")
    con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(name: str, case: Case, rows: int, limited: bool) -> tuple[float, float, int]:
    root = Path(tempfile.mkdtemp(prefix=f"retl-bench-{name}-"))
    in_child(make_people, root / "warehouse.duckdb", rows)
    port = free_port()
    env = environment(root)
    env["BENCH_KEY"] = "bench-key"
    emulate = [sys.executable, "-m", "retl_assets.cli", "emulate", name, "--port", str(port),
               "--token", case.emulator_key]
    # Emulators default to the vendor's published limit; "off" is a limit nobody reaches.
    emulate += ["--rate-limit", case.limit if limited else "1000000/1"]
    emulator = subprocess.Popen(emulate, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        entry = case.destination.replace("{url}", f"http://127.0.0.1:{port}")
        if not limited:
            entry = entry[:-1] + ", rate_limit: 'off'}"
        (root / "retl.yaml").write_text(f"""
sources: {{warehouse: {{type: duckdb, path: warehouse.duckdb}}}}
destinations:
  dest: {entry}
models:
  people: {{source: warehouse, primary_key: userId, sql: SELECT * FROM people}}
syncs:
  people_sync: {case.sync}
""")
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        _, mem, summary = retl_sync(env, "people")
        sync = summary["syncs"]["people_sync"]
        return sync["records_per_s"], mem, sync["succeeded"]
    finally:
        emulator.terminate()
        emulator.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("names", nargs="*", default=list(CASES))
    args = parser.parse_args()
    print(f"{'destination':12} {'limit':>12} {'records/s':>10} {'ceiling':>10} {'of ceiling':>10} "
          f"{'no limit':>10} {'peak MiB':>9}")
    for name in args.names:
        case = CASES[name]
        limited, mem1, ok1 = run_case(name, case, args.rows, limited=True)
        free, mem2, ok2 = run_case(name, case, args.rows, limited=False)
        assert ok1 == ok2 == args.rows, (ok1, ok2)
        ceiling = f"{case.ceiling:10,.0f}" if case.ceiling else f"{'n/a':>10}"
        share = f"{min(limited, case.ceiling) / case.ceiling:10.0%}" if case.ceiling else \
            f"{'-':>10}"
        print(f"{name:12} {case.limit:>12} {limited:10,.0f} {ceiling} {share} {free:10,.0f} "
              f"{max(mem1, mem2):9.0f}", flush=True)


if __name__ == "__main__":
    main()
