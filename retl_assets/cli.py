"""`retl`: validate | preview | sync | status | test-connection | grants | emulate.
Most take --json for scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from retl_assets.errors import RetlError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retl", description="Reverse ETL on Dagster")
    parser.add_argument("--project", help="project file (default: $RETL_PROJECT or the demo)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check the project file, queries and mappings")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("preview", help="first rows and columns of a model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("sync", help="run a model's job now, through Dagster")
    p.add_argument("model")
    p.add_argument("--full-resync", action="store_true", help="send every row again")
    p.add_argument("--allow-mass-delete", action="store_true",
                   help="allow this run to delete more than max_delete_fraction")
    p.add_argument("--verbose", action="store_true", help="show Dagster's own event log")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("status", help="recent runs with their counts")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("test-connection",
                       help="check a source's or destination's connection and credentials")
    p.add_argument("name", help="a source or destination of the project")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("grants", help="SQL for a role that may read only what the models read")
    p.add_argument("source")
    p.add_argument("--role", default="retl_reader", help="the role (and user) to create")
    p = sub.add_parser("emulate", help="run a destination's local emulator")
    p.add_argument("destination", help="customerio, segment, hubspot, ...")
    p.add_argument("--port", type=int, default=8811)
    p.add_argument("--write-key", "--token", dest="keys", action="append", default=None,
                   help="accepted write key or token (repeatable; default: any)")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--rate-429", type=float, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--rate-limit", help="N/SECONDS, e.g. 3000/3")
    p.add_argument("--database", help="the DuckDB file a warehouse emulator (bigquery, "
                                      "databricks) answers queries from")
    args = parser.parse_args(argv)
    if args.project:
        os.environ["RETL_PROJECT"] = args.project
    as_json = getattr(args, "json", False)
    try:
        return COMMANDS[args.command](args)
    except RetlError as e:
        if as_json:
            print(json.dumps({"error": str(e)}))
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2


def _validate(args: argparse.Namespace) -> int:
    from retl_assets.inspect import validate

    problems, checked = validate()
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, "checked": checked}))
    else:
        for line in checked:
            print(f"ok  {line}")
        for line in problems:
            print(f"ERR {line}")
        print("project is valid" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _preview(args: argparse.Namespace) -> int:
    from retl_assets.inspect import preview

    columns, rows = preview(args.model)
    if args.json:
        print(json.dumps({"model": args.model, "columns": columns, "rows": rows}, default=str))
        return 0
    print("columns: " + ", ".join(f"{c['name']} {c['type']}" for c in columns))
    print(_table([c["name"] for c in columns], [[r[c["name"]] for c in columns] for r in rows]))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from retl_assets.project import load_project
    from retl_assets.runner import sync_model

    project = load_project()
    summary = sync_model(project, args.model, full_resync=args.full_resync,
                         allow_mass_delete=args.allow_mass_delete,
                         log_level="DEBUG" if args.verbose else "CRITICAL")
    out = summary.as_dict()
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(f"model {summary.model}: {summary.status} (run {summary.run_id}, "
              f"partition {summary.partition})")
        print(f"  rows {summary.rows}  added {summary.added}  updated {summary.updated}  "
              f"deleted {summary.deleted}  unchanged {summary.unchanged}")
        for name, s in summary.syncs.items():
            print(f"  sync {name}: sent {s['sent']}  succeeded {s['succeeded']}  "
                  f"failed {s['failed']}  owed {s['owed']}  ({s['records_per_s']} records/s)")
        for e in summary.errors:
            print(f"  error: {e}", file=sys.stderr)
    return 0 if summary.status == "success" else 1


def _status(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from retl_assets.project import load_project
    from retl_assets.runner import ensure_dagster_home, recent_runs

    project = load_project()
    ensure_dagster_home(project)
    runs = recent_runs(DagsterInstance.get(), project, args.limit)
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], default=str))
        return 0
    rows = [[r.run_id[:8], r.model, r.status, r.partition, r.added, r.updated, r.deleted,
             sum((s.get("owed") or 0) for s in r.syncs.values())] for r in runs]
    print(_table(["run", "model", "status", "partition", "added", "updated", "deleted", "owed"],
                 rows) if rows else "no runs yet")
    return 0


def _test_connection(args: argparse.Namespace) -> int:
    from retl_assets.inspect import test_connection

    ok, message = test_connection(args.name)
    if args.json:
        print(json.dumps({"name": args.name, "ok": ok, "message": message}))
    else:
        print(("ok  " if ok else "ERR ") + message)
    return 0 if ok else 1


def _grants(args: argparse.Namespace) -> int:
    from retl_assets.grants import grants
    from retl_assets.project import load_project

    print(grants(load_project(), args.source, args.role), end="")
    return 0


def _emulate(args: argparse.Namespace) -> int:
    from retl_assets import vendors
    from retl_assets.emulators import serve_forever
    from retl_assets.emulators.common import Faults

    if args.destination not in vendors.emulator_types():
        raise RetlError(f"no emulator for {args.destination!r} "
                        f"(emulators: {', '.join(vendors.emulator_types())})")
    faults = Faults(error_rate=args.error_rate, rate_429=args.rate_429,
                    latency_ms=args.latency_ms)
    limit = None
    if args.rate_limit:
        n, _, window = args.rate_limit.partition("/")
        limit = (int(n), float(window or 1))
    keys = set(args.keys or [])
    if not keys and args.destination in ("customerio", "segment") and os.environ.get("CIO_WRITE_KEY"):
        keys = {os.environ["CIO_WRITE_KEY"]}
    options = {}
    if args.destination in vendors.WAREHOUSE_EMULATORS:
        if not args.database:
            raise RetlError(f"the {args.destination} emulator needs --database FILE.duckdb "
                            "to answer queries from")
        options["database"] = args.database
    app = vendors.emulator(args.destination).make_app(args.destination, keys or None, faults,
                                                      limit, **options)
    print(f"{args.destination} emulator on http://127.0.0.1:{args.port} "
          f"(state: /_emulator/state)", flush=True)
    serve_forever(app, args.port)
    return 0


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [min(40, max(len(r[i]) for r in cells)) for i in range(len(header))]
    return "\n".join("  ".join(v[:40].ljust(w) for v, w in zip(r, widths)) for r in cells)


COMMANDS = {"validate": _validate, "preview": _preview, "sync": _sync, "status": _status,
            "test-connection": _test_connection, "grants": _grants, "emulate": _emulate}

if __name__ == "__main__":
    sys.exit(main())
