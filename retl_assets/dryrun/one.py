"""`retl sync SYNC --only KEY`: send one chosen record now, and nothing else.

The record is the key's row in the model's *current* result: the query runs filtered to
that key and is compared with the committed snapshot for that key alone, so the payload and
idempotency key are exactly those the next regular run would send. Nothing of the state store
moves (no snapshot, cursor, ledger or checkpoint change, no lease): the regular run still
sends the record, with the same idempotency key, so a destination that deduplicates drops
the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from retl_assets.destinations import Destination, Outcome, Record, deliver
from retl_assets.dryrun.plan import full_work, only_key, planned
from retl_assets.errors import ProjectError
from retl_assets.project import Project
from retl_assets.sources import Source
from retl_assets.state.store import StateStore
from retl_assets.sync.run import NEVER_WRITTEN, encoded, plan_payloads, writer_for


@dataclass
class OneSent:
    sync: str
    key: str  # the primary key as text (values joined by |)
    change: str  # added | updated | deleted, as the regular run sees it ("unchanged" too)
    operation: str  # the vendor operation it went by
    payload: str  # JSON text, as sent
    idempotency_key: str
    status: str  # delivered | rejected | unsent | unconfirmed | invalid | skipped
    error: str | None
    dest_id: str | None  # the vendor's id, when its answer gave one
    regular_run: str  # what the sync's regular run will do with this record

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def key_values(project: Project, sync: str, given: list[str]) -> list[str]:
    """The `--only` values as one value per primary key column: `a|b`, or repeated."""
    model = project.models[project.config.syncs[sync].model]
    values = given[0].split("|") if len(given) == 1 and len(model.keys) > 1 else given
    if len(values) != len(model.keys):
        example = "|".join(f"<{k}>" for k in model.keys)
        raise ProjectError(f"sync {sync!r}: model {model.name!r} has the primary key "
                           f"({', '.join(model.keys)}); give --only {example} (or --only once "
                           f"per column); got {len(values)} value(s)")
    return values


def send_one(project: Project, store: StateStore, sync: str, source: Source,
             destination: Destination, given: list[str]) -> OneSent:
    config = project.config.syncs[sync]
    dest_config = project.config.destinations[config.destination]
    values = key_values(project, sync, given)
    key = "|".join(values)
    writer = writer_for(project, sync, destination)
    selects = tuple(writer.operations())
    with planned(project, store, sync, source, selects, only=values) as plan:
        work, rows = only_key(plan.con, plan.work, key)
        unchanged = rows == 0
        if unchanged:
            if plan.rows == 0:
                raise ProjectError(
                    f"sync {sync!r}: key {key!r} is not in model {config.model!r}'s current "
                    f"result (primary key {', '.join(project.models[config.model].keys)}); "
                    "nothing was sent")
            # Nothing owed and nothing new for it: send the row as a full resync would.
            full, _ = full_work(project, store, plan, selects)
            work, rows = only_key(plan.con, full, key)
            if rows == 0:
                raise ProjectError(
                    f"sync {sync!r} sends only {', '.join(selects)} records, and key {key!r} "
                    "is none of them now; nothing was sent")
        operations, payloads = plan_payloads(project, sync, plan.con, work, writer,
                                             writer.operations())
        found = []
        for operation, payload in payloads.items():
            changes = [c for c, o in operations.items() if o == operation]
            found += [(operation, row) for row in
                      encoded(plan.con, work, writer, operation, payload, changes).fetchall()]
    operation, (msgid, _, body, invalid, dest_id, sent_id, change) = found[0]
    route = getattr(writer, "route", None)
    routed = route(operation, dest_id) if route else operation
    regular = _regular_run(unchanged, msgid, writer.capabilities.deduplicates)
    one = OneSent(sync, key, "unchanged" if unchanged else change, routed, body, msgid,
                  "invalid", invalid, dest_id, regular)
    if writer.needs_dest_id(operation) and not dest_id:
        one.status, one.error = "skipped", NEVER_WRITTEN
        return one
    if invalid is not None:
        return one  # refused by the destination's contract before sending: nothing sent
    outcomes: list[Outcome] = []
    deliver(writer, [Record(msgid, key, body, routed, dest_id, sent_id or None)],
            outcomes.extend, max_retries=dest_config.max_retries,
            timeout_s=dest_config.timeout_s)
    answer = outcomes[0]
    one.status, one.error, one.dest_id = answer.status, answer.error, answer.dest_id or dest_id
    return one


def _regular_run(unchanged: bool, msgid: str, deduplicates: bool) -> str:
    if unchanged:
        return ("the row has not changed since the sync's last run, so its regular run will "
                "not send it again")
    repeat = ("which this destination drops as a repeat" if deduplicates else
              "so a destination that deduplicates drops the repeat (this one applies the "
              "same values again)")
    return (f"the sync's regular run will still send it, with the same idempotency key "
            f"{msgid}, {repeat}; nothing else moved (no snapshot, cursor or ledger change)")
