"""Salesforce Bulk API 2.0 ingest: a large changeset delivered as CSV jobs, end to end.

The shared engine sends one request per batch and reads one answer; a bulk job is a
conversation, so this module delivers a stream of records itself, with the contract of
delivery.deliver(): every record ends delivered, rejected or unsent, reported through
`on_outcomes` as each job ends. One job per operation and at most `records_per_job`
records or `bytes_per_job` of CSV:

    POST  /jobs/ingest {object, operation, externalIdFieldName, contentType: CSV, lineEnding: LF}
    PUT   /jobs/ingest/{id}/batches            the CSV, once (a job takes one upload)
    PATCH /jobs/ingest/{id} {state: UploadComplete}
    GET   /jobs/ingest/{id}                    until JobComplete, Failed or Aborted
    GET   .../successfulResults/  (sf__Id, sf__Created, input columns)
    GET   .../failedResults/      (sf__Id, sf__Error, input columns)

Result rows come in no promised order, so they are matched to records by the external id
(by Id for deletes). A record in neither list was not processed (a failed or aborted job):
unsent, so it stays owed. In the CSV an empty value leaves a field alone and `#N/A` clears
it, so a JSON null or empty string becomes `#N/A` and a field left out (skip_nulls) stays
empty; nested references (`Account: {External_Id__c: x}`) become `Account.External_Id__c`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from retl_assets.destinations.base import Record
from retl_assets.destinations.delivery import Outcome, Report, count
from retl_assets.destinations.retry import backoff
from retl_assets.errors import AuthError, UnreachableError

if TYPE_CHECKING:
    from retl_assets.destinations.salesforce.writer import SalesforceWriter

TERMINAL = ("JobComplete", "Failed", "Aborted")
NULL = "#N/A"
GONE = ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY")  # a delete already done
FIELDS = re.compile(r"^[\w.,]*$")


@dataclass(frozen=True)
class BulkSettings:
    threshold: int | None = 2000  # more records of one operation than this: a bulk job
    poll_s: float = 2.0  # first wait between polls of a job's state
    max_poll_s: float = 30.0  # the wait grows to this
    timeout_s: float = 3600.0  # abort a job still running after this long
    records_per_job: int = 1_000_000
    bytes_per_job: int = 100 * 1024 * 1024  # 150 MB once base64-encoded, as Salesforce counts


class _Halt(Exception):
    """A job that cannot go on; `stop` when nothing more may be sent this run."""

    def __init__(self, message: str, stop: bool = False):
        super().__init__(message)
        self.stop = stop


def deliver_bulk(writer: SalesforceWriter, records: Iterable[Record],
                 on_outcomes: Callable[[list[Outcome]], None], *, max_retries: int = 6,
                 timeout_s: float = 30.0) -> Report:
    """Send every record through bulk jobs; `on_outcomes` is called after each job."""
    report = Report()
    started = time.monotonic()
    stopped: str | None = None
    try:
        with httpx.Client(timeout=timeout_s) as client:
            session = _Session(writer, client, report, max_retries)
            for chunk in _jobs(records, writer.dest.bulk):
                report.sent += len(chunk)
                if stopped:
                    outcomes = [Outcome(r, "unsent", stopped) for r in chunk]
                else:
                    try:
                        outcomes = session.run(chunk)
                    except _Halt as halt:
                        message = f"stopped: {halt}" if halt.stop else str(halt)
                        stopped = message if halt.stop else None
                        outcomes = [Outcome(r, "unsent", message) for r in chunk]
                count(report, outcomes)
                on_outcomes(outcomes)
    finally:
        report.seconds = time.monotonic() - started
    return report


def _jobs(records: Iterable[Record], settings: BulkSettings) -> Iterator[list[Record]]:
    batch: list[Record] = []
    size = 0
    for r in records:
        full = (len(batch) >= settings.records_per_job
                or size + len(r.payload) > settings.bytes_per_job)
        if batch and (full or r.operation != batch[0].operation):
            yield batch
            batch, size = [], 0
        batch.append(r)
        size += len(r.payload)
    if batch:
        yield batch


class _Session:
    def __init__(self, writer: SalesforceWriter, client: httpx.Client, report: Report,
                 max_retries: int):
        self.writer = writer
        self.client = client
        self.report = report
        self.max_retries = max_retries
        self.settings = writer.dest.bulk
        self.url = f"{writer.dest.base}/jobs/ingest"

    def run(self, chunk: list[Record]) -> list[Outcome]:
        operation = chunk[0].operation
        text, keys = table(self.writer, chunk)
        spec: dict[str, Any] = {"object": self.writer.object, "operation": operation,
                                "contentType": "CSV", "lineEnding": "LF"}
        if operation == "upsert":
            spec["externalIdFieldName"] = self.writer.id_field
        job = self.call("POST", self.url, json=spec).json()
        jid = str(job["id"])
        # A retried upload that had in fact arrived is refused as a second one: that is fine.
        self.call("PUT", f"{self.url}/{jid}/batches", content=text.encode(),
                  headers={"Content-Type": "text/csv"}, tolerate="BULK_API_ERROR")
        self.call("PATCH", f"{self.url}/{jid}", json={"state": "UploadComplete"})
        info = self.wait(jid)
        done = self.results(jid, "successfulResults")
        failed = self.results(jid, "failedResults")
        why = f"bulk job {jid} ended {info.get('state')}"
        if info.get("errorMessage"):
            why += f": {info['errorMessage']}"
        key = "Id" if operation == "delete" else self.writer.id_field
        return outcomes(chunk, keys, key, done, failed, why)

    def wait(self, jid: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.settings.timeout_s
        delay = self.settings.poll_s
        while True:
            time.sleep(delay)
            info = self.call("GET", f"{self.url}/{jid}").json()
            if info.get("state") in TERMINAL:
                return info
            if time.monotonic() > deadline:
                self.call("PATCH", f"{self.url}/{jid}", json={"state": "Aborted"})
                return self.call("GET", f"{self.url}/{jid}").json()
            delay = min(delay * 1.5, self.settings.max_poll_s)

    def results(self, jid: str, kind: str) -> list[list[str]]:
        response = self.call("GET", f"{self.url}/{jid}/{kind}/")
        return list(csv.reader(io.StringIO(response.text, newline="")))

    def call(self, method: str, url: str, tolerate: str | None = None,
             **kw: Any) -> httpx.Response:
        headers = {**self.writer.dest.headers, **kw.pop("headers", {})}
        name = self.writer.destination
        attempt = 0
        while True:
            self.report.requests += 1
            try:
                response = self.client.request(method, url, headers=headers, **kw)
            except httpx.TransportError as e:
                if attempt >= self.max_retries:
                    raise UnreachableError(
                        f"destination {name!r} could not be reached after {attempt + 1} "
                        f"attempts: {type(e).__name__}: {e}") from None
                attempt += 1
                self.report.retries += 1
                time.sleep(backoff(attempt))
                continue
            if tolerate and _code(response) == tolerate:
                return response
            answer = self.writer.classify(response)
            if answer is None:
                return response
            if answer.kind == "auth":
                raise AuthError(f"destination {name!r} refused the credentials: {answer.error}")
            if answer.kind == "stop":
                raise _Halt(answer.error or "stopped", stop=True)
            if answer.kind == "retry" and attempt < self.max_retries:
                attempt += 1
                self.report.retries += 1
                if answer.retry_after is not None:
                    self.report.rate_limited += 1
                time.sleep(answer.retry_after if answer.retry_after is not None
                           else backoff(attempt))
                continue
            raise _Halt(f"{method} {url.rsplit('/services/data/', 1)[-1]}: {answer.error}")


def table(writer: SalesforceWriter, records: list[Record]) -> tuple[str, list[str]]:
    """The job's CSV and, per record, the value its result rows are matched by."""
    if records[0].operation == "delete":
        rows = [{"Id": r.dest_id or ""} for r in records]
        key = "Id"
    else:
        rows = [_flatten(json.loads(r.payload)) for r in records]
        key = writer.id_field
    columns = list(dict.fromkeys(c for row in rows for c in row))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row[c]) if c in row else "" for c in columns])
    return out.getvalue(), [_cell(row.get(key)) for row in rows]


def outcomes(chunk: list[Record], keys: list[str], key_column: str, done: list[list[str]],
             failed: list[list[str]], why: str) -> list[Outcome]:
    """Each record's outcome from the job's result rows, matched by `key_column` (the
    external id field, or Id for deletes), not by position."""
    operation = chunk[0].operation
    waiting: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        waiting.setdefault(key.strip().lower(), []).append(i)
    found: dict[int, Outcome] = {}
    for rows, ok in ((done, True), (failed, False)):
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        if "sf__Id" not in header or key_column not in header[2:]:
            continue  # not a result file of this job: its records stay unsent
        sf_id, second = header.index("sf__Id"), 1 + header.index("sf__Id")
        column = header.index(key_column, 2)
        for row in body:
            if column >= len(row):
                continue
            slots = waiting.get(row[column].strip().lower())
            if not slots:
                continue
            i = slots.pop(0)
            record = chunk[i]
            if ok:
                dest_id = row[sf_id] if operation == "upsert" and row[sf_id] else None
                found[i] = Outcome(record, "delivered", dest_id=dest_id)
                continue
            error = parse_error(row[second])
            if operation == "delete" and error["statusCode"] in GONE:
                found[i] = Outcome(record, "delivered")
            else:
                found[i] = Outcome(record, "rejected", record_error([error]))
    return [found.get(i) or Outcome(r, "unsent", why) for i, r in enumerate(chunk)]


def parse_error(text: str) -> dict[str, Any]:
    """`CODE:message:Field1,Field2 --` (sf__Error) as {statusCode, message, fields}."""
    text = text.strip().removesuffix("--").strip()
    code, _, rest = text.partition(":")
    message, fields = rest, ""
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        if FIELDS.match(tail.strip()):
            message, fields = head, tail.strip()
    return {"statusCode": code, "message": message.strip(),
            "fields": [f for f in fields.split(",") if f]}


def record_error(errors: list) -> str:
    """Salesforce's per-record errors as one line: `CODE: message [fields]; ...`."""
    parts = []
    for e in errors:
        if not isinstance(e, dict):
            continue
        fields = e.get("fields") or []
        parts.append(f"{e.get('statusCode')}: {e.get('message')}"
                     + (f" [{', '.join(map(str, fields))}]" if fields else ""))
    return "; ".join(parts) or "refused without an error"


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes" and not prefix:
            continue
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _cell(value: Any) -> str:
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ";".join(map(str, value))  # a multi-select picklist
    return json.dumps(value)


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body[0].get("errorCode")
    return None

