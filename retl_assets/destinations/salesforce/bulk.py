"""Salesforce Bulk API 2.0 ingest: one batch of records delivered as one CSV job.

A run with more than `bulk_threshold` records of one operation sends them by its bulk form
(`bulk_upsert`, `bulk_delete`); the engine cuts those into job-sized batches (at most
`records_per_job` records, `bytes_per_job` of payload) and hands each to `BulkJobs.run`,
which sends the job's requests through the engine's exchange: the same limiters, retries
(429, 5xx, connection errors), Retry-After and run-level stops (auth, setup, a spent org
limit) as every other request.

    POST  /jobs/ingest {object, operation, externalIdFieldName, contentType: CSV, lineEnding: LF}
    PUT   /jobs/ingest/{id}/batches            the CSV, once (a job takes one upload)
    PATCH /jobs/ingest/{id} {state: UploadComplete}
    GET   /jobs/ingest/{id}                    until JobComplete, Failed or Aborted
    GET   .../successfulResults/  (sf__Id, sf__Created, input columns)
    GET   .../failedResults/      (sf__Id, sf__Error, input columns)

The job's answer is indexed like the batch. Result rows come in no promised order, so they
are matched to records by the external id (by Id for deletes). A record in neither list was
not processed (a failed or aborted job): the answer leaves it out, so the engine keeps it
owed as unconfirmed, with why the job ended. In the CSV an empty value leaves a field alone
and `#N/A` clears it, so a JSON null or empty string becomes `#N/A` and a field left out
(skip_nulls) stays empty; nested references (`Account: {External_Id__c: x}`) become
`Account.External_Id__c`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from retl_assets.destinations.base import Answer, Exchange, Record, json_body
from retl_assets.destinations.salesforce.answers import GONE, error_code, parse_error, record_error
from retl_assets.errors import QuotaSpent, RequestError, RetryableAnswer

# The operations that carry each collections operation's records as bulk jobs.
BULK_FORMS = {"upsert": "bulk_upsert", "delete": "bulk_delete"}
TERMINAL = ("JobComplete", "Failed", "Aborted")
NULL = "#N/A"


@dataclass(frozen=True)
class BulkSettings:
    threshold: int | None = 2000  # more records of one operation than this: bulk jobs
    poll_s: float = 2.0  # first wait between polls of a job's state
    max_poll_s: float = 30.0  # the wait grows to this
    timeout_s: float = 3600.0  # abort a job still running after this long
    records_per_job: int = 1_000_000
    bytes_per_job: int = 100 * 1024 * 1024  # 150 MB once base64-encoded, as Salesforce counts


def verb(operation: str) -> str:
    """The Salesforce operation (upsert, delete) an operation or its bulk form performs."""
    return operation.removeprefix("bulk_")


class BulkJobs:
    """One sync's Bulk API 2.0 jobs on one object; `run` delivers one batch as one job."""

    def __init__(self, base: str, headers: dict[str, str], sobject: str, id_field: str,
                 settings: BulkSettings, check: Callable[[httpx.Response], None]):
        self.url = f"{base}/jobs/ingest"
        self.headers = headers
        self.object = sobject
        self.id_field = id_field
        self.settings = settings
        self.check = check  # raises what a failed answer means (answers.check)

    async def run(self, call: Exchange, operation: str, records: list[Record]) -> Answer:
        does = verb(operation)
        text, keys = table(does, self.id_field, records)
        jid = await self._start(call, operation, does, text)
        info = await self._wait(call, operation, jid)
        state = info.get("state")
        if state not in TERMINAL:
            # Still running though aborted: nothing confirmed, every record stays owed.
            return Answer(text=f"bulk job {jid} still {state} when aborted")
        why = f"bulk job {jid} ended {state}"
        if info.get("errorMessage"):
            why += f": {info['errorMessage']}"
        results = [await self._results(call, operation, jid, kind)
                   for kind in ("successfulResults", "failedResults")]
        why += "".join(note for _, note in results)
        key = "Id" if does == "delete" else self.id_field
        return matched(does, keys, key, results[0][0], results[1][0], why)

    async def _start(self, call: Exchange, operation: str, does: str, text: str) -> str:
        """Create the job, upload its CSV and close it; the job's id."""
        spec: dict[str, Any] = {"object": self.object, "operation": does,
                                "contentType": "CSV", "lineEnding": "LF"}
        if does == "upsert":
            spec["externalIdFieldName"] = self.id_field
        created = await self._step(call, operation, "POST", "", "creating a bulk job", json=spec)
        jid = str(json_body(created).get("id") or "")
        if not jid:
            raise RetryableAnswer(f"creating a bulk job: no id in {created.text[:200]!r}")
        # A resent upload that had in fact arrived is refused as a second one: that is fine.
        await self._step(call, operation, "PUT", f"/{jid}/batches", f"bulk job {jid}: uploading",
                         content=text.encode(), tolerate="BULK_API_ERROR",
                         headers={"Content-Type": "text/csv"})
        await self._step(call, operation, "PATCH", f"/{jid}", f"bulk job {jid}: closing",
                         json={"state": "UploadComplete"})
        return jid

    async def _wait(self, call: Exchange, operation: str, jid: str) -> dict[str, Any]:
        """Poll the job until it ends, waiting longer each time; abort it after timeout_s.
        Its last info."""
        deadline = time.monotonic() + self.settings.timeout_s
        delay = self.settings.poll_s
        polling = f"bulk job {jid}: polling"
        while True:
            await asyncio.sleep(delay)
            info = json_body(await self._step(call, operation, "GET", f"/{jid}", polling))
            if info.get("state") in TERMINAL:
                return info
            if time.monotonic() > deadline:
                try:
                    await self._step(call, operation, "PATCH", f"/{jid}",
                                     json={"state": "Aborted"})
                except RequestError:
                    pass  # refused (409) when the job has just ended: its state says which
                return json_body(await self._step(call, operation, "GET", f"/{jid}", polling))
            delay = min(delay * 1.5, self.settings.max_poll_s)

    async def _results(self, call: Exchange, operation: str, jid: str,
                       kind: str) -> tuple[list[list[str]], str]:
        """A result file's rows, and a note for the job's answer when it could not be read
        (its records then stay owed)."""
        try:
            response = await self._step(call, operation, "GET", f"/{jid}/{kind}/")
        except RequestError as e:
            return [], f"; {kind} not read: {e}"
        return list(csv.reader(io.StringIO(response.text, newline=""))), ""

    async def _step(self, call: Exchange, operation: str, method: str, path: str,
                    what: str | None = None, tolerate: str | None = None,
                    headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        """One request of the job through the engine; its success response. When `what`
        names the step, a failure is raised as the batch's (see `_unsent`); otherwise as it
        came. `tolerate`: an error code that means success when the request is a resend."""
        url, every = f"{self.url}{path}", {**self.headers, **(headers or {})}
        sent: list[None] = []  # one entry per attempt built
        last: list[httpx.Response] = []  # the latest response read

        def build(client: httpx.AsyncClient) -> httpx.Request:
            sent.append(None)
            return client.build_request(method, url, headers=every, **kw)

        def read(response: httpx.Response) -> Answer:
            last[:] = [response]
            if not (tolerate and len(sent) > 1 and error_code(response)[0] == tolerate):
                self.check(response)
            return Answer()

        try:
            await call(operation, build, read)
        except RequestError as e:
            if what is None:
                raise
            raise _unsent(e, what) from None
        return last[0]


def _unsent(error: RequestError, what: str) -> RequestError:
    """What a job step without a success makes of the whole batch: unsent. A refused step is
    no record's fault (the engine would halve the batch into ever more jobs), so it is raised
    as retries spent; a spent org limit stays QuotaSpent and stops the run's sending."""
    if isinstance(error, QuotaSpent):
        return error
    return RetryableAnswer(f"{what}: {error}", status=error.status)


def table(does: str, id_field: str, records: list[Record]) -> tuple[str, list[str]]:
    """The job's CSV and, per record, the value its result rows are matched by."""
    if does == "delete":
        rows = [{"Id": r.dest_id or ""} for r in records]
        key = "Id"
    else:
        rows = [_flatten(json.loads(r.payload)) for r in records]
        key = id_field
    columns = list(dict.fromkeys(c for row in rows for c in row))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row[c]) if c in row else "" for c in columns])
    return out.getvalue(), [_cell(row.get(key)) for row in rows]


def matched(does: str, keys: list[str], key_column: str, done: list[list[str]],
            failed: list[list[str]], why: str) -> Answer:
    """The job's answer, indexed like its batch, from its result rows matched by
    `key_column` (the external id field, or Id for deletes), not by position. Records in
    neither file are left out: the engine keeps them owed, saying `why`."""
    waiting: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        waiting.setdefault(key.strip().lower(), []).append(i)
    answer = Answer(text=why)
    for rows, ok in ((done, True), (failed, False)):
        for i, sf_id, second in _rows(rows, key_column, waiting):
            if ok:
                answer.confirmed.add(i)
                if does == "upsert" and sf_id:
                    answer.ids[i] = sf_id
                continue
            error = parse_error(second)
            if does == "delete" and error["statusCode"] in GONE:
                answer.confirmed.add(i)  # deleted before: what the delete wanted
            else:
                answer.rejected[i] = record_error([error])
    return answer


def _rows(rows: list[list[str]], key_column: str, waiting: dict[str, list[int]]):
    """(record index, sf__Id, the second column) of each result row naming a record."""
    if not rows:
        return
    header, body = rows[0], rows[1:]
    if "sf__Id" not in header or key_column not in header[2:]:
        return  # not a result file of this job: its records stay owed
    sf_id = header.index("sf__Id")
    column = header.index(key_column, 2)
    for row in body:
        if column >= len(row):
            continue
        slots = waiting.get(row[column].strip().lower())
        if slots:
            yield slots.pop(0), row[sf_id], row[sf_id + 1]


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
