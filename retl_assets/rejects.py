"""The rows a sync owes, read from its ledger: what `retl errors` shows and the sync asset's
`errors` table.

Each owed row keeps why (`__retl_error`: "rejected: ...", "invalid: ...", "unsent: ...",
"unconfirmed: ..."), how often it was tried and the model's columns, so its payload is
rebuilt here with the sync's own mapping, as the sync sends it. The ledger can hold millions
of rows: it is read by DuckDB in batches, grouped there, and written out as it is read.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import duckdb
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from retl_assets.destinations import Writer, open_destination
from retl_assets.errors import ProjectError, RetlError
from retl_assets.mapping import Column, json_sql, plan
from retl_assets.project import Project
from retl_assets.project.schema import EnvRef
from retl_assets.redact import shown
from retl_assets.state.engine import connect, quote
from retl_assets.state.files import sql_path
from retl_assets.state.store import ATTEMPTS, DEST_ID, ERROR, KEYTEXT, MSGID, OP, StateStore
from retl_assets.sync.ledger import key_text_sql

# As the vendors' docs name them.
MISSING = "missing required field"
INVALID_VALUE = "invalid field value"
NO_OBJECT = "object type not found"
CONNECTION = "connection failed"
RATE_LIMITED = "rate limited"
UNCONFIRMED = "unconfirmed"
OTHER = "other"
KINDS = (MISSING, INVALID_VALUE, NO_OBJECT, CONNECTION, RATE_LIMITED, UNCONFIRMED, OTHER)

# Fields by which a destination finds the person or record: a missing one is worded so.
IDENTIFIERS = {"userid", "anonymousid", "email", "id", "external_id", "externalid",
               "distinct_id", "groupid", "previousid", "identity", "objectid", "phone"}
BATCH = 10_000
CAUSES = 100  # distinct causes grouped; the rest are summed under "other causes"
TABLE_ROWS = 50  # rows in the sync asset's `errors` table


@dataclass
class Cause:
    kind: str
    status: str  # rejected | invalid | unsent | unconfirmed
    rows: int
    error: str  # one example, as the destination (or retl's check) gave it
    action: str
    keys: list[str] = field(default_factory=list)  # a few of the rows, by primary key


@dataclass
class Rejects:
    sync: str
    owed: int
    statuses: dict[str, int]  # rejected | invalid | unsent | unconfirmed -> rows
    causes: list[Cause]
    rows: list[dict[str, Any]]  # the first rows: key, kind, status, error, attempts, ...
    payload_note: str | None = None  # why payloads could not be rebuilt, if they could not

    def as_dict(self) -> dict[str, Any]:
        return {"sync": self.sync, "owed": self.owed, "statuses": self.statuses,
                "causes": [c.__dict__ for c in self.causes], "rows": self.rows,
                "payload_note": self.payload_note}


def classify(status: str, error: str) -> str:
    """The kind of an owed row, from its status and its error text."""
    text = error.lower()
    if status == "unconfirmed":
        return UNCONFIRMED
    if "429" in text or "rate limit" in text or "too many requests" in text or "quota" in text:
        return RATE_LIMITED
    if status == "unsent" and re.search(
            r"reach|connect|timed? ?out|unavailable|refused the connection|http 5\d\d|dns", text):
        return CONNECTION
    if re.search(r"object type|unknown object|no such object|invalid object|invalid_type|"
                 r"sobject type|entity type|unable to infer object", text):
        return NO_OBJECT
    if re.search(r"\bneeds?\b|required|missing|no value for|\bhas none\b|^no \w+|is empty|"
                 r"must (be )?(set|present|provided)", text):
        return MISSING
    # `invalid_request` says nothing of a field; INVALID_EMAIL_ADDRESS-like codes do.
    if re.search(r"\binvalid(?!_request)|not valid|must be|malformed|format|too long|"
                 r"too large|over the|larger than|out of range|not allowed|wrong type|expected",
                 text):
        return INVALID_VALUE
    return OTHER


def report(project: Project, sync: str, limit: int = 20) -> Rejects:
    """Every cause of the sync's owed rows with its count and what to do, and the first
    `limit` rows with their payloads."""
    with _Ledger(project, sync) as ledger:
        if ledger.empty:
            return Rejects(sync, 0, {}, [], [], None)
        statuses, causes = ledger.causes()
        rows = [ledger.row(r) for r in ledger.fetch(limit, ordered=True)]
        return Rejects(sync, sum(statuses.values()), statuses, causes, rows, ledger.note)


def export(project: Project, sync: str, path: str | Path, fmt: str) -> int:
    """Write every owed row (key, kind, status, error, attempts, action, payload, ...) to a
    CSV or JSON Lines file, as it is read; returns the rows written."""
    if fmt not in ("csv", "jsonl"):
        raise RetlError(f"unknown format {fmt!r}: csv or jsonl")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with _Ledger(project, sync) as ledger, open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROW_FIELDS)) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        for raw in ([] if ledger.empty else ledger.fetch(None)):
            row = ledger.row(raw)
            if writer:
                writer.writerow({**row, "payload": "" if row["payload"] is None
                                 else json.dumps(row["payload"], ensure_ascii=False)})
            else:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            written += 1
    return written


def rejects_table(project: Project, store: StateStore, sync: str,
                  limit: int = TABLE_ROWS) -> MetadataValue:
    """The sync's owed rows as a Dagster table (the UI's rejected-rows table): key, kind,
    status, error, attempts and action; the payload as sent when the project's `samples` is `full`,
    its values masked when `redacted`, and no payload when `off`."""
    samples = project.config.samples
    columns = [TableColumn("key", "string"), TableColumn("kind", "string"),
               TableColumn("status", "string"), TableColumn("error", "string"), TableColumn("attempts", "int"),
               TableColumn("action", "string")]
    if samples != "off":
        columns.append(TableColumn("payload", "string"))
    records = []
    with _Ledger(project, sync, store) as ledger:
        for raw in ([] if ledger.empty else ledger.fetch(limit, ordered=True)):
            row = ledger.row(raw)
            values = {k: row[k] for k in ("key", "kind", "status", "error", "attempts",
                                          "action")}
            values["error"] = values["error"][:500]
            if samples != "off":
                payload = shown(row["payload"], samples)
                values["payload"] = "" if payload is None else json.dumps(payload)[:2000]
            records.append(TableRecord(values))
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))



ROW_FIELDS = ("key", "kind", "status", "error", "attempts", "change", "operation", "msgid",
              "action", "payload")


class _Ledger:
    """One sync's ledger, opened on a bounded DuckDB with each row's payload SQL beside it."""

    def __init__(self, project: Project, sync: str, store: StateStore | None = None):
        if sync not in project.config.syncs:
            raise ProjectError(f"no sync named {sync!r} (syncs: "
                               f"{', '.join(project.config.syncs)})")
        self.project, self.sync = project, sync
        self.config = project.config.syncs[sync]
        self.model = project.models[self.config.model]
        self.store = store or StateStore(project.state_dir)
        state = self.store.sync_state(sync)
        self.path = self.store.ledger_path(sync, state)
        self.ids = self.store.ids_path(sync, state)
        self.empty = self.path is None or not self.path.exists()
        self.note: str | None = None
        self.fields: dict[str, dict[str, str]] = {}  # operation -> payload field -> column
        self.operations: dict[str, str] = {}
        self.con: duckdb.DuckDBPyConnection | None = None
        self._actions: dict[tuple[str, str], str] = {}

    def __enter__(self) -> Self:
        if self.empty:
            return self
        self.con = connect(self.store.root / "tmp")
        keys = key_text_sql(self.model.keys)
        ids = (f"LEFT JOIN read_parquet({sql_path(self.ids)}) i ON {keys} = i.{KEYTEXT}"
               if self.ids and self.ids.exists() else "")
        dest_id = f"i.{DEST_ID}" if ids else f"NULL::VARCHAR AS {DEST_ID}"
        # The ledger keeps neither the key as text nor the vendor id; the payload may use both.
        self.con.execute(f"CREATE VIEW owed AS SELECT l.*, {keys} AS {KEYTEXT}, {dest_id} "
                         f"FROM read_parquet({sql_path(self.path)}) l {ids}")
        self.payload = self._payload_sql()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.con is not None:
            self.con.close()

    def _payload_sql(self) -> str:
        """SQL giving each row's payload as the sync sends it (per its change's operation)."""
        columns = {name: typ for name, typ, *_ in self.con.execute("DESCRIBE owed").fetchall()
                   if not name.startswith("__retl_")}
        try:
            writer = _writer(self.project, self.config.destination, self.sync, self.config)
            self.operations = writer.operations()
            whens = []
            for change, operation in self.operations.items():
                rules = writer.rules(operation)
                tree = writer.payload(operation, plan(self.sync, self.config, self.model.name,
                                                      columns, rules))
                self.fields[operation] = {".".join(p): e.name for p, e in tree.items()
                                          if isinstance(e, Column)}
                sql = json_sql(tree, columns, rules, self.config.skip_nulls)
                whens.append(f"WHEN '{change}' THEN ({sql})::VARCHAR")
            return f"CASE {OP} {' '.join(whens)} ELSE NULL END" if whens else "NULL"
        except RetlError as e:  # the mapping no longer fits the rows: show them without
            self.note = f"payloads not rebuilt: {e}"
            return "NULL"

    def causes(self) -> tuple[dict[str, int], list[Cause]]:
        status, error = _split_sql()
        groups = self.con.execute(f"""
            SELECT {status} AS s, regexp_replace({error}, '{_SHAPE_SQL}', '…', 'g') AS shape,
                   count(*) AS n, min({error}) AS example, min({KEYTEXT}, 3)
            FROM owed GROUP BY 1, 2 ORDER BY n DESC, shape""").fetchall()
        statuses: dict[str, int] = {}
        for s, _, n, _, _ in groups:
            statuses[s] = statuses.get(s, 0) + n
        causes = []
        for s, _, n, example, keys in groups[:CAUSES]:
            kind = classify(s, example)
            causes.append(Cause(kind, s, n, example, self.action(kind, s, example, n), keys))
        rest = sum(n for _, _, n, _, _ in groups[CAUSES:])
        if rest:
            causes.append(Cause(OTHER, "", rest, "", f"{rest} rows have {len(groups) - CAUSES} "
                                f"further causes: export them (--csv or --jsonl) to see each"))
        return statuses, causes

    def fetch(self, limit: int | None, ordered: bool = False) -> Iterator[tuple]:
        status, error = _split_sql()
        sql = (f"SELECT {KEYTEXT}, {status}, {error}, {ATTEMPTS}, {OP}, {MSGID}, "
               f"{self.payload} FROM owed")
        if ordered:
            sql += f" ORDER BY {KEYTEXT}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self.con.execute(sql)
        while chunk := cursor.fetchmany(BATCH):
            yield from chunk

    def row(self, raw: tuple) -> dict[str, Any]:
        key, status, error, attempts, change, msgid, payload = raw
        kind = classify(status, error)
        return {"key": key, "kind": kind, "status": status, "error": error,
                "attempts": attempts, "change": change,
                "operation": self.operations.get(change), "msgid": msgid,
                "action": self._row_action(kind, status, error),
                "payload": json.loads(payload) if payload is not None else None}

    def _row_action(self, kind: str, status: str, error: str) -> str:
        # Rows share few distinct errors: word each once.
        if (kind, error) not in self._actions:
            if len(self._actions) > 10_000:
                self._actions.clear()
            self._actions[kind, error] = self.action(kind, status, error, None)
        return self._actions[kind, error]

    def action(self, kind: str, status: str, error: str, rows: int | None) -> str:
        """What to do, in plain words; `rows` None: for one row."""
        how_many = "this row" if rows is None else f"{rows} row{'s' * (rows != 1)}"
        dest = self.config.destination
        dest_type = self.project.config.destinations[dest].type
        where = f"model {self.model.name!r}"
        again = "it is sent again next run" if rows is None else "they are sent again next run"
        if kind == MISSING:
            found = self._missing_field(error)
            if found:
                field_name, column = found
                purpose = (" to match the record" if field_name.split(".")[-1].lower()
                           in IDENTIFIERS else "")
                return (f"`{column}` is NULL or empty for {how_many}; {dest} ({dest_type}) needs "
                        f"it as {field_name}{purpose}: filter such rows out in {where} "
                        f"(WHERE {quote(column)} IS NOT NULL) or map another column to "
                        f"{field_name}")
            return (f"{how_many} lack a field {dest} ({dest_type}) requires ({error}): map a "
                    f"column to it in sync {self.sync!r}, or filter such rows out in {where}")
        if kind == INVALID_VALUE:
            return (f"{dest} refused a value of {how_many} ({error}): fix the value in {where} "
                    f"or the mapping of sync {self.sync!r}; {again}")
        if kind == NO_OBJECT:
            return (f"{dest} does not know the object sync {self.sync!r} writes ({error}): "
                    f"create it there or fix the sync's object, then {again}")
        if kind == CONNECTION:
            return (f"{dest} could not be reached for {how_many}: check its base_url, network "
                    f"and status page; nothing to change in the rows, {again}")
        if kind == RATE_LIMITED:
            return (f"{dest} kept answering 'rate limited' for {how_many}: {again}; if it "
                    f"repeats, lower the destination's rate_limit or max_concurrency, or "
                    f"run the model less often")
        if kind == UNCONFIRMED:
            return (f"{dest}'s answer did not confirm {how_many}: {again} with the same "
                    f"idempotency key, so a copy it already has is dropped; nothing to change")
        return (f"{dest} refused {how_many} ({error}): read the error, fix the rows in {where} "
                f"or the sync's mapping; {again}")

    def _missing_field(self, error: str) -> tuple[str, str] | None:
        """(payload field, model column) of a field the error names, where a column feeds it."""
        for operation in dict.fromkeys(self.operations.values()):
            for field_name, column in self.fields.get(operation, {}).items():
                words = {field_name, field_name.split(".")[-1]}
                if any(re.search(rf"(?<![\w.]){re.escape(w)}(?![\w])", error) for w in words):
                    return field_name, column
        return None


# What varies between rows with the same cause: quoted values and numbers.
_SHAPE_SQL = r"""'[^']*'|"[^"]*"|[0-9]+""".replace("'", "''")


def _split_sql() -> tuple[str, str]:
    """SQL for an owed row's status (before the first ': ') and its error (after it)."""
    status = f"split_part({ERROR}, ': ', 1)"
    error = f"coalesce(nullif(substr({ERROR}, strpos({ERROR}, ': ') + 2), ''), {ERROR})"
    return status, error


def _writer(project: Project, destination: str, sync: str, config) -> Writer:
    """The sync's writer, which only builds payloads here: a secret that is not set (retl
    errors may run where the destination's key is not) is replaced by a placeholder, as
    nothing is sent."""
    try:
        return open_destination(project, destination).writer(sync, config)
    except ProjectError:
        from retl_assets import vendors

        dest = project.config.destinations[destination]
        placeholder = {name: "not-used-by-retl-errors" for name, value in dest
                       if isinstance(value, EnvRef)}
        facts = vendors.destination(dest.type)
        return facts.connect(destination, dest.model_copy(update=placeholder)).writer(sync, config)
