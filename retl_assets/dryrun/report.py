"""`retl dry-run SYNC`: what the sync's next run would send, and what it would refuse.

Every record the run would select is mapped and checked against the destination's contract
(the writer's own `invalid_sql`, its payload limits included), as the real run checks it;
nothing is sent, committed or written to the state store. Where the destination can be asked
read-only which records it holds (a writer with `lookup`), the report splits the records into
would-create and would-update; elsewhere it says it cannot tell.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from retl_assets.destinations import Destination, Outcome, Record, deliver
from retl_assets.destinations.base import Answer, Exchange, Writer
from retl_assets.dryrun.plan import planned
from retl_assets.project import Project
from retl_assets.redact import shown
from retl_assets.sources import Source
from retl_assets.state.files import read_json
from retl_assets.state.store import StateStore
from retl_assets.sync import ledger
from retl_assets.sync.run import encoded, plan_payloads, writer_for

LOOKUP = "lookup"  # the one operation of a read-only lookup
LOOKUP_LIMIT = 1_000  # records a dry run asks the destination about, at most


@dataclass
class DryRun:
    sync: str
    model: str
    destination: str
    rows: int = 0  # the model's rows now
    changes: dict[str, int] = field(default_factory=dict)  # the model's diff
    work: int = 0  # rows the run would take up (new changes and owed rows)
    owed_before: int = 0  # of them, rows earlier runs left owed
    would_send: int = 0
    by_change: dict[str, int] = field(default_factory=dict)  # added / updated / deleted
    by_operation: dict[str, int] = field(default_factory=dict)  # the vendor's operations
    rejected: int = 0  # refused by the destination's contract before sending (kept owed)
    reasons: dict[str, int] = field(default_factory=dict)  # why, with how many
    skipped: int = 0  # not sent on purpose (on_invalid: skip; a delete of what retl never wrote)
    resumed: int = 0  # delivered by an interrupted run: not sent again
    samples: list[str] = field(default_factory=list)  # payloads, JSON text
    # would_create / would_update (and ambiguous), when the destination could be asked
    exists: dict[str, int] | None = None
    exists_note: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self, samples: str = "full") -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "samples"}
        out["samples"] = shown_samples(self.samples, samples)
        return out

    def metadata(self, samples: str) -> dict[str, Any]:
        """For Dagster: counts as numbers, the rest as JSON; samples as the project says."""
        from dagster import MetadataValue

        meta: dict[str, Any] = {"dry_run": True, "model_rows": self.rows, "work": self.work,
                                "owed_before": self.owed_before, "would_send": self.would_send,
                                "rejected": self.rejected, "skipped": self.skipped,
                                "resumed": self.resumed}
        meta.update({f"would_{k}": v for k, v in self.by_change.items()})
        for name in ("changes", "by_operation", "reasons"):
            meta[name] = MetadataValue.json(getattr(self, name))
        meta["exists"] = MetadataValue.json(self.exists) if self.exists is not None else \
            MetadataValue.text(self.exists_note)
        if samples != "off":
            meta["sample_payloads"] = MetadataValue.json(shown_samples(self.samples, samples))
        if self.notes:
            meta["notes"] = MetadataValue.md("\n".join(f"- {n}" for n in self.notes))
        return meta

    def text(self, samples: str = "full") -> str:
        ops = ", ".join(f"{op} {n}" for op, n in self.by_operation.items()) or "none"
        lines = [
            (f"dry run of sync {self.sync} (model {self.model} -> {self.destination}); "
             "nothing was sent or committed"),
            f"  model: {self.rows} rows; " + "  ".join(f"{k} {v}" for k, v in self.changes.items()),
            f"  the next run takes up {self.work} rows ({self.owed_before} owed by earlier runs)",
            (f"  would send {self.would_send}: "
             + "  ".join(f"{k} {v}" for k, v in self.by_change.items())
             + f"  (by operation: {ops})"),
            (f"  would refuse {self.rejected} (kept owed with the reason), skip {self.skipped}, "
             f"leave {self.resumed} already delivered"),
        ]
        lines += [f"    {n} x {reason}" for reason, n in sorted(
            self.reasons.items(), key=lambda item: -item[1])]
        if self.exists is not None:
            lines.append("  at the destination: " + "  ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in self.exists.items())
                + (f" ({self.exists_note})" if self.exists_note else ""))
        else:
            lines.append(f"  at the destination: {self.exists_note}")
        lines += [f"  note: {n}" for n in self.notes]
        for sample in shown_samples(self.samples, samples):
            lines.append("  sample: " + json.dumps(sample))
        return "\n".join(lines)


def dry_run(project: Project, store: StateStore, sync: str, source: Source,
            destination: Destination, samples: int = 3,
            lookup_limit: int = LOOKUP_LIMIT) -> DryRun:
    """The sync's next run, worked out and checked, with nothing sent or committed."""
    started = time.monotonic()
    config = project.config.syncs[sync]
    dest_config = project.config.destinations[config.destination]
    report = DryRun(sync, config.model, config.destination)
    holder = _lease_holder(store, config.model)
    if holder:
        report.notes.append(f"run {holder} is syncing model {config.model} now: this shows "
                            "what follows the state committed before it")
    if not config.enabled:
        report.notes.append(f"sync {sync} is disabled: the model's job leaves it out until "
                            "it is enabled, then it sends this")
    writer = writer_for(project, sync, destination)
    with planned(project, store, sync, source, tuple(writer.operations())) as plan:
        report.rows, report.changes, report.work = plan.rows, plan.changes, plan.work_rows
        report.owed_before = plan.state.owed
        done = ledger.delivered_before(store, sync)
        operations, payloads = plan_payloads(project, sync, plan.con, plan.work, writer,
                                             writer.operations())
        asks: list[Record] = []
        by_id = 0  # records retl holds the vendor's id of: addressed by it, so updates
        lookup = getattr(writer, "lookup", None)
        route = getattr(writer, "route", None)
        changes_of = {op: [c for c, o in operations.items() if o == op] for op in payloads}
        for operation in sorted(payloads, key=lambda op: "deleted" in changes_of[op]):
            needs_id = writer.needs_dest_id(operation)
            cursor = encoded(plan.con, plan.work, writer, operation, payloads[operation],
                             changes_of[operation])
            while chunk := cursor.fetchmany(10_000):
                for msgid, key, body, invalid, dest_id, sent, change in chunk:
                    if msgid in done:
                        report.resumed += 1
                    elif (needs_id and not dest_id) or (invalid is not None
                                                        and config.on_invalid == "skip"):
                        report.skipped += 1  # as the real run skips them
                    elif invalid is not None:
                        report.rejected += 1
                        report.reasons[invalid] = report.reasons.get(invalid, 0) + 1
                    else:
                        routed = route(operation, dest_id) if route else operation
                        report.would_send += 1
                        report.by_change[change] = report.by_change.get(change, 0) + 1
                        report.by_operation[routed] = report.by_operation.get(routed, 0) + 1
                        if len(report.samples) < samples:
                            report.samples.append(body)
                        if lookup is None or needs_id:
                            continue
                        if dest_id:
                            by_id += 1
                        elif len(asks) < lookup_limit:
                            asks.append(Record(msgid, key, body, LOOKUP, None, sent))
        if lookup is None:
            report.exists_note = (f"{dest_config.type} cannot be asked read-only which "
                                  "records it holds, so whether each would be created or "
                                  "updated cannot be told")
        else:
            report.exists, report.exists_note = _ask(writer, asks, by_id, lookup_limit,
                                                     dest_config.max_retries,
                                                     dest_config.timeout_s)
    report.seconds = time.monotonic() - started
    return report


class _Lookup:
    """The writer seen by the delivery engine as one read-only operation, so the lookup's
    requests get the destination's limits, retries and error classes like any other."""

    def __init__(self, writer: Writer):
        self.destination = writer.destination
        self.capabilities = writer.capabilities
        self.jobs = frozenset({LOOKUP})
        self._writer = writer

    async def job(self, call: Exchange, operation: str, records: list[Record]) -> Answer:
        return await self._writer.lookup(call, records)  # type: ignore[attr-defined]


def _ask(writer: Writer, records: list[Record], by_id: int, limit: int, max_retries: int,
         timeout_s: float) -> tuple[dict[str, int], str]:
    found = {"would_create": 0, "would_update": by_id, "ambiguous": 0, "unknown": 0}

    def on_outcomes(outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.status == "delivered":
                found["would_update" if o.dest_id else "would_create"] += 1
            elif o.status == "rejected":
                found["ambiguous"] += 1  # several records hold the value: the run refuses it
            else:
                found["unknown"] += 1

    if records:
        deliver(_Lookup(writer), records, on_outcomes, max_retries=max_retries,
                timeout_s=timeout_s)
    note = f"{by_id} by the id retl holds" if by_id else ""
    if len(records) >= limit:
        note += ("; " if note else "") + f"only the first {limit} others were looked up"
    return {k: v for k, v in found.items() if v or k.startswith("would")}, note


def _lease_holder(store: StateStore, model: str) -> str | None:
    """The run that seems to be syncing the model now: its lease is live and its process
    too (a lease outlives its run until it expires, so the process is asked; one on another
    machine is taken at its word)."""
    held = read_json(store.lease_path(model))
    if not held or float(held.get("expires_at", 0)) <= time.time():
        return None
    if held.get("host") == socket.gethostname():
        pid = int(held.get("pid") or 0)
        if pid == os.getpid() or not _alive(pid):
            return None
    return str(held.get("run_id"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def shown_samples(samples: list[str], mode: str) -> list[Any]:
    """Sample payloads as the project's `samples:` says: as they are, values masked, or none."""
    if mode == "off":
        return []
    return [shown(json.loads(s), mode) for s in samples]



__all__ = ["DryRun", "dry_run", "shown_samples"]
