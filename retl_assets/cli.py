"""`retl`: validate | preview | sync | status | errors | test-connection | enable |
disable | grants | emulate.
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
    p.add_argument("model", help="a model; with --only, a sync")
    p.add_argument("--only", action="append", metavar="KEY",
                   help="send only this record of the sync now (a composite key as a|b, or "
                        "--only per column); moves no snapshot, cursor or ledger")
    p.add_argument("--full-resync", action="store_true", help="send every row again")
    p.add_argument("--allow-mass-delete", action="store_true",
                   help="allow this run to delete more than max_delete_fraction")
    p.add_argument("--verbose", action="store_true", help="show Dagster's own event log")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line every few s)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("dry-run", help="what a sync's next run would send; sends nothing")
    p.add_argument("sync")
    p.add_argument("--samples", type=int, default=3, help="sample payloads to show")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("status", help="recent runs with their counts, and each sync's health")
    p.add_argument("name", nargs="?", help="only this model or sync")
    p.add_argument("--limit", type=int, default=10, help="runs to list")
    p.add_argument("--runs-for-health", type=int, default=20,
                   help="runs a sync's success rate is taken over")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("errors", help="the rows a sync owes: rejected, invalid or unsent, "
                                      "with the payload and what to do")
    p.add_argument("sync")
    p.add_argument("--csv", metavar="FILE", help="write every owed row to this CSV file")
    p.add_argument("--jsonl", metavar="FILE", help="write every owed row to this JSON Lines file")
    p.add_argument("--limit", type=int, default=20, help="rows to show")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("test-connection",
                       help="check a source's or destination's connection and credentials")
    p.add_argument("name", help="a source or destination of the project")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("disable", help="switch a sync off: its changes wait until enabled")
    p.add_argument("sync")
    p.add_argument("--reason", help="why, shown by `retl status` and in the sync's log")
    p = sub.add_parser("enable", help="switch a sync back on: its next run catches up")
    p.add_argument("sync")
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
    if args.only:
        return _sync_one(args)
    from retl_assets.progress import ProgressView
    from retl_assets.project import load_project
    from retl_assets.runner import sync_model

    project = load_project()
    # Progress goes to stderr; --json is for scripts, which read one answer, not progress;
    # --verbose shows the same lines in Dagster's own log.
    view = None if args.no_progress or args.verbose or args.json else ProgressView(sys.stderr)
    summary = sync_model(project, args.model, full_resync=args.full_resync,
                         allow_mass_delete=args.allow_mass_delete,
                         log_level="DEBUG" if args.verbose else "CRITICAL", progress=view)
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


def _sync_parts(name: str, what: str):
    """The project, state store, source and destination a command on sync `name` needs."""
    from retl_assets.destinations import open_destination
    from retl_assets.project import load_project
    from retl_assets.sources import open_source
    from retl_assets.state.store import StateStore

    project = load_project()
    sync = _named_sync(project, name, what)
    return (project, StateStore(project.state_dir),
            open_source(project, project.models[sync.model].config.source),
            open_destination(project, sync.destination))


def _sync_one(args: argparse.Namespace) -> int:
    """`retl sync SYNC --only KEY`: one record now, printed with the destination's answer."""
    from retl_assets.dryrun import send_one

    project, store, source, destination = _sync_parts(args.model, "--only")
    one = send_one(project, store, args.model, source, destination, args.only)
    if args.json:
        print(json.dumps(one.as_dict(), default=str))
    else:
        print(f"sync {one.sync}, key {one.key} ({one.change}, by {one.operation}): {one.status}"
              + (f", destination id {one.dest_id}" if one.dest_id else ""))
        if one.error:
            print(f"  error: {one.error}")
        print(f"  payload: {one.payload}")
        print(f"  {one.regular_run}")
    return 0 if one.status == "delivered" else 1


def _dry_run(args: argparse.Namespace) -> int:
    from retl_assets.dryrun import dry_run

    project, store, source, destination = _sync_parts(args.sync, "dry-run")
    report = dry_run(project, store, args.sync, source, destination, samples=args.samples)
    # The user's own terminal: payloads are shown as they are.
    print(json.dumps(report.as_dict(), default=str) if args.json else report.text())
    return 0


def _named_sync(project, name: str, what: str):
    if name not in project.config.syncs:
        raise RetlError(f"{what}: no sync named {name!r} (syncs: "
                        f"{', '.join(project.config.syncs) or 'none'})")
    return project.config.syncs[name]


def _status(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from retl_assets import history
    from retl_assets.project import load_project
    from retl_assets.runner import ensure_dagster_home

    project = load_project()
    ensure_dagster_home(project)
    instance = DagsterInstance.get()
    runs = history.runs(instance, project, args.name, limit=args.limit)
    health = history.health(instance, project, args.name, runs_for_health=args.runs_for_health)
    if args.json:
        print(json.dumps({"runs": [r.as_dict() for r in runs],
                          "health": [h.as_dict() for h in health]}, default=str))
        return 0
    print(_runs_text(runs) if runs else "no runs yet")
    print()
    print(f"health (over each sync's last {args.runs_for_health} finished runs):")
    print(_table(["sync", "model", "enabled", "last success", "run", "success rate", "owed",
                  "pending"],
                 [[h.sync, h.model, "yes" if h.enabled else "no", _when(h.last_success_at),
                   (h.last_success_run or "never")[:8],
                   "-" if h.success_rate is None else f"{h.success_rate:.0%} of {h.runs}",
                   h.owed, h.pending] for h in health]))
    return 0


def _runs_text(runs: list) -> str:
    """One row a run, each followed by its syncs' lines and its errors."""
    header = ["run", "model", "started", "duration", "status", "partition", "rows", "added",
              "updated", "deleted", "unchanged"]
    table = _table(header, [[r.run_id[:8], r.model, _when(r.started_at),
                             "" if r.duration_s is None else f"{r.duration_s:.1f}s",
                             r.status, r.partition, r.rows, r.added, r.updated, r.deleted,
                             r.unchanged] for r in runs]).splitlines()
    lines = table[:1]
    for r, row in zip(runs, table[1:]):
        lines.append(row)
        for name, s in r.syncs.items():
            # A count the sync could not tell (it stopped before counting) is "?", never 0.
            n = {k: "?" if v is None else v for k, v in s.items()}
            lines.append(f"  sync {name}: {s.get('status')}  sent {n['sent']}  succeeded "
                         f"{n['succeeded']}  failed {n['failed']}  retried {n['retries']}  "
                         f"owed {n['owed']}  {n['records_per_s']} records/s")
        lines += [f"  sync {name}: skipped (an earlier step failed)" for name in r.skipped_syncs]
        lines += [f"  error: {e}" for e in r.errors]
    return "\n".join(lines)


def _when(ts: float | None) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _errors(args: argparse.Namespace) -> int:
    from retl_assets import rejects
    from retl_assets.project import load_project

    report = rejects.report(load_project(), args.sync, limit=args.limit)
    written = {}
    for fmt, path in (("csv", args.csv), ("jsonl", args.jsonl)):
        if path:
            written[path] = rejects.export(load_project(), args.sync, path, fmt)
    if args.json:
        print(json.dumps({**report.as_dict(), "written": written}, default=str))
        return 0
    print(f"sync {report.sync} owes {report.owed} rows"
          + (f" ({', '.join(f'{n} {k}' for k, n in report.statuses.items())})"
             if report.owed else ""))
    if report.causes:
        print("\nwhat to do, by cause:")
        for c in report.causes:
            print(f"  {c.rows:>6}  {c.kind}: {c.action}")
    if report.rows:
        print(f"\nfirst {len(report.rows)} rows:")
        print(_table(["key", "kind", "attempts", "error", "payload"],
                     [[r["key"], r["kind"], r["attempts"], r["error"],
                       json.dumps(r["payload"]) if r["payload"] is not None else ""]
                      for r in report.rows]))
    for path, n in written.items():
        print(f"wrote {n} rows to {path}")
    return 0


def _test_connection(args: argparse.Namespace) -> int:
    from retl_assets.inspect import test_connection

    ok, message = test_connection(args.name)
    if args.json:
        print(json.dumps({"name": args.name, "ok": ok, "message": message}))
    else:
        print(("ok  " if ok else "ERR ") + message)
    return 0 if ok else 1


def _switch(args: argparse.Namespace) -> int:
    from retl_assets.project import load_project
    from retl_assets.state.store import StateStore
    from retl_assets.switch import is_enabled, set_switch

    project = load_project()
    store = StateStore(project.state_dir)
    set_switch(project, store, args.sync, args.command == "enable",
               getattr(args, "reason", None), by=f"retl {args.command}")
    on, why = is_enabled(project, store, args.sync)
    if on:
        print(f"sync {args.sync} is enabled: its next run sends every change it missed")
    elif args.command == "enable":  # switched on, but the project file keeps it off
        print(f"sync {args.sync} is still disabled ({why})")
        return 1
    else:
        print(f"sync {args.sync} is disabled ({why}): its changes wait; "
              f"`retl enable {args.sync}` resumes")
    return 0


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


COMMANDS = {"validate": _validate, "preview": _preview, "sync": _sync, "dry-run": _dry_run,
            "status": _status,
            "errors": _errors,
            "test-connection": _test_connection, "disable": _switch, "enable": _switch,
            "grants": _grants, "emulate": _emulate}

if __name__ == "__main__":
    sys.exit(main())
