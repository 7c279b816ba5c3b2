"""One sync's run: work set -> payloads -> delivery -> ledger.

Nothing here moves the sync's cursor until the destination has answered for every record;
a run stopped by an error leaves its delivered batches checkpointed and the cursor where
it was, so the next run resumes. The error it raises carries the run's partial result
(`stopped_result`), so what the stop left owed is recorded too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from retl_assets.destinations import Destination, Outcome, Record, Report, Writer, deliver
from retl_assets.destinations.delivery import count, merge, stopped_report
from retl_assets.mapping import json_sql, plan
from retl_assets.project import Project
from retl_assets.state.engine import connect
from retl_assets.state.files import remove, sql_path
from retl_assets.state.store import DEST_ID, KEYTEXT, MSGID, OP, StateStore
from retl_assets.sync import ledger

RECORD_BATCH = 10_000
NEVER_WRITTEN = "retl never wrote this record, so a delete must not touch it"
PROGRESS_EVERY_S = 0.25  # the progress hook hears of answered batches at most this often

# (key text, operation, status, error) of each record: delivered | rejected | invalid | unsent
# | unconfirmed | skipped | resumed
Observed = tuple[str, str, str, str | None]


@dataclass
class SyncResult:
    sync: str
    sent: int = 0
    succeeded: int = 0
    rejected: int = 0  # the destination refused them
    invalid: int = 0  # retl's own checks refused them before sending
    unsent: int = 0  # retries ran out
    unconfirmed: int = 0  # sent, but the destination's answer did not account for them
    skipped: int = 0  # not sent on purpose (on_invalid: skip; a delete of what retl never wrote)
    owed: int = 0  # rows the sync still owes after this run
    resumed: int = 0  # delivered by an interrupted earlier run, not sent again
    work: int = 0
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)  # delivered per operation
    samples: list[str] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # key, kind, error

    @property
    def failed(self) -> int:
        return self.rejected + self.invalid + self.unconfirmed

    @property
    def records_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def counts(self) -> dict[str, int | float]:
        """The run's figures under the names its Dagster metadata uses (a materialisation,
        or the Failure of a run that stopped)."""
        return {"sent": self.sent, "succeeded": self.succeeded, "failed": self.failed,
                "rejected": self.rejected, "invalid": self.invalid, "unsent": self.unsent,
                "unconfirmed": self.unconfirmed, "owed": self.owed, "retries": self.retries,
                "duration_s": round(self.seconds, 3),
                "records_per_s": round(self.records_per_second, 1)}


def stopped_result(error: BaseException) -> SyncResult | None:
    """The partial result a run stopped by `error` left (None: not raised by run_sync)."""
    return getattr(error, "retl_sync_result", None)


def run_sync(project: Project, store: StateStore, name: str, destination: Destination,
             full_resync: bool = False, max_retries: int = 6, timeout_s: float = 30.0,
             progress: Callable[[int, int], None] | None = None,
             observe: Callable[[list[Observed]], None] | None = None) -> SyncResult:
    """Deliver the sync's work and commit its ledger. `progress(done, total)` hears how many
    of the run's work rows are accounted for, at most every PROGRESS_EVERY_S; `observe(rows)`
    gets every record's outcome, a batch at a time. An error that stops the run carries its
    partial result: see `stopped_result`."""
    config = project.config.syncs[name]
    model = project.models[config.model]
    head = store.head(model.name)
    state = store.sync_state(name)
    started = time.monotonic()
    result = SyncResult(name)
    if head.version == 0:
        return result  # the model has never been committed: nothing to send yet
    if full_resync:
        state.epoch += 1
    full = full_resync or store.needs_full(model.name, state)
    if full and state.pending_full is None:
        state.pending_full = head.log_seq
    if full:
        store.write_sync_state(name, state)  # fixed before sending: a resumed run reuses it
    con = connect(store.root / "tmp")
    work = checkpoint = None
    live = Report()  # outcomes as they come in: what a stopped run still knows
    merged = Report()
    try:
        writer = writer_for(project, name, destination)
        operations = writer.operations()
        work, result.work = ledger.build_work(con, store, name, model.name, model.keys,
                                              tuple(operations), head, state, full_resync)
        operations, payloads = plan_payloads(project, name, con, work, writer, operations)
        done = ledger.delivered_before(store, name)
        checkpoint = ledger.Checkpoint(store, name)
        failures: dict[str, str] = {}
        new_ids: dict[str, str] = {}
        gone: set[str] = set()
        removes: dict[str, bool] = {}  # operation -> whether it takes records away
        tell = _Progress(progress, result) if progress else None

        def delivered(key: str, operation: str, dest_id: str | None) -> None:
            """Keep what the vendor's answer means for the id map (now or from a checkpoint)."""
            result.by_operation[operation] = result.by_operation.get(operation, 0) + 1
            if dest_id:
                new_ids[key] = dest_id
            if operation not in removes:
                removes[operation] = (writer.needs_dest_id(operation)
                                      and "deleted" in _changes(operations, operation))
            if removes[operation]:
                gone.add(key)

        def on_outcomes(outcomes: list[Outcome]) -> None:
            ok = [(o.record.msgid, o.dest_id) for o in outcomes if o.status == "delivered"]
            if ok:
                checkpoint.add(ok)
            count(live, outcomes)
            for o in outcomes:
                if o.status == "delivered":
                    delivered(o.record.key, o.record.operation, o.dest_id)
                    continue
                if o.dest_id:
                    # Written but not finished (an association failed): a later delete must
                    # still reach the record.
                    new_ids[o.record.key] = o.dest_id
                failures[o.record.msgid] = f"{o.status}: {o.error}"
                _note(result, o.record.key, o.status, o.error or "")
            if observe is not None:
                observe([(o.record.key, o.record.operation, o.status, o.error) for o in outcomes])
            if tell is not None:
                tell.answered(live)

        # Deletes last: an upsert and a delete of the same record never share a run.
        for operation in sorted(payloads, key=lambda op: "deleted" in _changes(operations, op)):
            changes = _changes(operations, operation)
            records = _records(con, work, writer, operation, payloads[operation], changes,
                               done, failures, result, config.on_invalid, delivered, observe)
            merge(merged, deliver(writer, records, on_outcomes, max_retries=max_retries,
                                  timeout_s=timeout_s))
        _take(result, merged)
        checkpoint.close()
        result.owed = ledger.commit(con, store, name, work, failures, head, state, state.epoch,
                                    new_ids, gone)
        work = None
        if tell is not None:
            tell.answered(live, final=True)
    except Exception as e:
        # What the stop left: the figures of the batches answered so far, and as owed every
        # row of the work set not delivered now or by an earlier try (those are checkpointed).
        # Outcomes were counted as they came (`live`); requests and retries are the finished
        # deliveries' plus those of the one the stop cut short.
        live.sent = live.delivered + live.rejected + live.unsent + live.unconfirmed
        cut = stopped_report(e) or Report()
        live.requests = merged.requests + cut.requests
        live.retries = merged.retries + cut.retries
        live.rate_limited = merged.rate_limited + cut.rate_limited
        _take(result, live)
        result.owed = (result.work - result.succeeded - result.skipped if work is not None
                       else state.owed)
        result.seconds = time.monotonic() - started
        try:
            e.retl_sync_result = result  # type: ignore[attr-defined]
        except AttributeError:
            pass  # an exception type that takes no attributes: the result is lost, not the error
        raise
    finally:
        if checkpoint is not None:
            checkpoint.close()
        con.close()
        remove(work)
        result.seconds = time.monotonic() - started
    return result


class _Progress:
    """Calls the progress hook with the rows accounted for, at most every PROGRESS_EVERY_S."""

    def __init__(self, hook: Callable[[int, int], None], result: SyncResult):
        self._hook, self._result = hook, result
        self._last = 0.0

    def answered(self, live: Report, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        r = self._result
        answered = live.delivered + live.rejected + live.unsent + live.unconfirmed
        self._hook(min(answered + r.resumed + r.skipped + r.invalid, r.work), r.work)


def _take(result: SyncResult, report: Report) -> None:
    result.sent, result.rejected, result.unsent = report.sent, report.rejected, report.unsent
    result.unconfirmed = report.unconfirmed
    result.succeeded = report.delivered + result.resumed
    result.requests, result.retries = report.requests, report.retries
    result.rate_limited = report.rate_limited


def writer_for(project: Project, name: str, destination: Destination) -> Writer:
    """The sync's writer, under the project's rate limit for its destination."""
    config = project.config.syncs[name]
    writer = destination.writer(name, config)
    _apply_rate_override(writer, project.config.destinations[config.destination])
    return writer


def plan_payloads(project: Project, name: str, con, work, writer: Writer,
                  operations: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Change -> operation (bulk forms chosen for this run's size), and the SQL encoding each
    operation's payloads. Every payload is planned before anything is sent: a mapping error
    stops the sync with nothing half-sent."""
    config = project.config.syncs[name]
    operations = _bulk_forms(con, work, writer, operations)
    columns = ledger.data_columns(con, work)
    payloads = {}
    for operation in dict.fromkeys(operations.values()):
        mapped = plan(name, config, config.model, columns, writer.rules(operation))
        payloads[operation] = json_sql(writer.payload(operation, mapped), columns,
                                       writer.rules(operation), config.skip_nulls)
    return operations, payloads


def encoded(con, work, writer: Writer, operation: str, payload: str, changes: list[str]):
    """A cursor over the work rows of `changes`, each as (idempotency key, key text, payload,
    why the contract refuses it or None, the vendor's id, the id it is written under, the
    change)."""
    wanted = ", ".join(f"'{c}'" for c in changes)
    sent_id = getattr(writer, "sent_id", lambda operation: None)(operation) or "NULL"
    return con.execute(
        f"SELECT {MSGID}, {KEYTEXT}, p, {writer.invalid_sql(operation, 'p')}, {DEST_ID}, sid, "
        f"{OP} FROM (SELECT *, ({payload})::VARCHAR AS p, ({sent_id})::VARCHAR AS sid "
        f"FROM read_parquet({sql_path(work)}) WHERE {OP} IN ({wanted}))"
    )


def _apply_rate_override(writer: Writer, dest_config) -> None:
    """The project's `rate_limit` replaces the vendor's published one (or lifts it)."""
    override = dest_config.rate_override()
    if override is None:
        return
    limit = None if override == "off" else override
    writer.capabilities = replace(writer.capabilities, rate_limit=limit, operation_limits={},
                                  byte_rate=None)


def _bulk_forms(con, work, writer: Writer, operations: dict[str, str]) -> dict[str, str]:
    """Change -> operation, with the vendor's bulk form (a job, not requests) for each
    operation that has more records in this run than the writer's `bulk_threshold`."""
    threshold = getattr(writer, "bulk_threshold", None)
    if threshold is None:
        return operations
    counts = dict(con.execute(f"SELECT {OP}, count(*) FROM read_parquet({sql_path(work)}) "
                              f"GROUP BY 1").fetchall())
    sizes: dict[str, int] = {}
    for change, operation in operations.items():
        sizes[operation] = sizes.get(operation, 0) + counts.get(change, 0)
    return {change: writer.bulk_operation(operation) if sizes[operation] > threshold
            else operation for change, operation in operations.items()}


def _changes(operations: dict[str, str], operation: str) -> list[str]:
    return [change for change, op in operations.items() if op == operation]


def _records(con, work, writer: Writer, operation: str, payload: str, changes: list[str],
             done: dict[str, str | None], failures: dict[str, str], result: SyncResult,
             on_invalid: str, delivered,
             observe: Callable[[list[Observed]], None] | None) -> Iterator[Record]:
    cursor = encoded(con, work, writer, operation, payload, changes)
    needs_id = writer.needs_dest_id(operation)
    route = getattr(writer, "route", None)
    while chunk := cursor.fetchmany(RECORD_BATCH):
        refused: list[Observed] = []  # records settled before sending, for `observe`
        for msgid, key, body, invalid, dest_id, sent, _change in chunk:
            if msgid in done:
                # An interrupted run delivered it: not sent again, but its vendor id counts.
                result.resumed += 1
                delivered(key, operation, done[msgid])
                if observe is not None:
                    refused.append((key, operation, "resumed", None))
                continue
            if needs_id and not dest_id:
                result.skipped += 1  # retl never wrote this record: a delete must not touch it
                if observe is not None:
                    refused.append((key, operation, "skipped", NEVER_WRITTEN))
                continue
            if invalid is not None:
                if on_invalid == "skip":
                    result.skipped += 1
                    if observe is not None:
                        refused.append((key, operation, "skipped", invalid))
                    continue
                failures[msgid] = f"invalid: {invalid}"
                result.invalid += 1
                _note(result, key, "invalid", invalid)
                if observe is not None:
                    refused.append((key, operation, "invalid", invalid))
                continue
            if len(result.samples) < 3:
                result.samples.append(body)
            yield Record(msgid, key, body, route(operation, dest_id) if route else operation,
                         dest_id, sent or None)
        if refused and observe is not None:
            observe(refused)


def _note(result: SyncResult, key: str, kind: str, error: str) -> None:
    if len(result.errors) < 50:
        result.errors.append((key, kind, error))
