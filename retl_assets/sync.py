"""One sync's run: work set -> payloads -> delivery -> ledger.

Nothing here moves the sync's cursor until the destination has answered for every record;
a run stopped by an error leaves its delivered batches checkpointed and the cursor where
it was, so the next run resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from retl_assets.destinations import Destination, Outcome, Record, deliver
from retl_assets.mapping import Raw, columns_used, json_sql, plan
from retl_assets.project import Project
from retl_assets.state import ledger
from retl_assets.state.engine import connect
from retl_assets.state.files import remove, sql_path
from retl_assets.state.store import MSGID, StateStore

RECORD_BATCH = 10_000


@dataclass
class SyncResult:
    sync: str
    sent: int = 0
    succeeded: int = 0
    rejected: int = 0  # the destination refused them
    invalid: int = 0  # retl's own checks refused them before sending
    unsent: int = 0  # retries ran out
    owed: int = 0  # rows the sync still owes after this run
    resumed: int = 0  # delivered by an interrupted earlier run, not sent again
    work: int = 0
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    samples: list[str] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # key, kind, error

    @property
    def failed(self) -> int:
        return self.rejected + self.invalid

    @property
    def records_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def run_sync(project: Project, store: StateStore, name: str, destination: Destination,
             full_resync: bool = False, max_retries: int = 6, timeout_s: float = 30.0) -> SyncResult:
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
        store.write_sync_state(name, state)  # fixed before sending: retries reuse it
    con = connect(store.root / "tmp")
    work = None
    try:
        work, result.work = ledger.build_work(con, store, name, model.name, model.keys,
                                              config.records, head, state, full_resync)
        columns = ledger.data_columns(con, work)
        rules = destination.rules(config.action)
        tree = plan(name, config, model.name, columns, rules)
        if config.mapping is None:
            # Mapping by name: keys stay in the payload, but fields retl owns do not.
            tree = {p: e for p, e in tree.items() if p[-1] not in ("type", "messageId")}
        for path, sql in destination.envelope(config.action).items():
            tree[path] = Raw(sql)
        tree.setdefault(("messageId",), Raw(MSGID))
        payload = json_sql(tree, columns, rules)
        done = ledger.delivered_before(store, name)
        failures: dict[str, str] = {}

        def records():
            cursor = con.execute(
                f"SELECT {MSGID}, {ledger.KEYTEXT}, p, "
                f"{destination.invalid_sql(config.action, 'p')} "
                f"FROM (SELECT *, ({payload})::VARCHAR AS p FROM read_parquet({sql_path(work)}))"
            )
            while chunk := cursor.fetchmany(RECORD_BATCH):
                for msgid, key, body, invalid in chunk:
                    if msgid in done:
                        result.resumed += 1
                        continue
                    if invalid is not None:
                        failures[msgid] = f"invalid: {invalid}"
                        result.invalid += 1
                        _note(result, key, "invalid", invalid)
                        continue
                    if len(result.samples) < 3:
                        result.samples.append(body)
                    yield Record(msgid, key, body)

        def on_outcomes(outcomes: list[Outcome]) -> None:
            ok = [o.record.msgid for o in outcomes if o.status == "delivered"]
            if ok:
                ledger.checkpoint(store, name, ok)
            for o in outcomes:
                if o.status != "delivered":
                    failures[o.record.msgid] = f"{o.status}: {o.error}"
                    _note(result, o.record.key, o.status, o.error or "")

        report = deliver(destination, records(), on_outcomes, max_retries=max_retries,
                         timeout_s=timeout_s)
        result.sent, result.rejected, result.unsent = report.sent, report.rejected, report.unsent
        result.succeeded = report.delivered + result.resumed
        result.requests, result.retries = report.requests, report.retries
        result.rate_limited = report.rate_limited
        result.owed = ledger.commit(con, store, name, work, failures, head, state, state.epoch)
        work = None
    finally:
        con.close()
        remove(work)
        result.seconds = time.monotonic() - started
    return result


def _note(result: SyncResult, key: str, kind: str, error: str) -> None:
    if len(result.errors) < 50:
        result.errors.append((key, kind, error))


def mapped_columns(project: Project, name: str, columns: dict[str, str],
                   destination_rules) -> set[str]:
    config = project.config.syncs[name]
    return columns_used(plan(name, config, config.model, columns, destination_rules))
