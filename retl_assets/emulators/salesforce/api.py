"""Local emulator of a Salesforce org's REST API: sObject Collections upsert by external id
and delete by id, Bulk API 2.0 ingest jobs, and /limits. docs/vendor-contracts.md section 2.

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503 SERVER_UNAVAILABLE; faults.latency_ms;
2. `Authorization: Bearer <token>` (or `OAuth <token>`) else 401 INVALID_SESSION_ID;
3. the org's limits, both answered 403 REQUEST_LIMIT_EXCEEDED as Salesforce does:
   concurrent requests ("ConcurrentRequests ... Limit exceeded.", transient) and the
   rolling daily API request allocation ("TotalRequests Limit exceeded.", spent until the
   window rolls). Admitted answers carry `Sforce-Limit-Info: api-usage=n/m`;
4. injected rate faults (answered as the concurrency refusal: Salesforce sends no 429) and
   500/503s;
5. the endpoint. Collections upsert: at most 200 records, each `attributes.type` the URI's
   object; per-record errors (required fields, email, 32,000 chars, duplicates in one
   request, a reference by external id to a parent that does not exist) in a 200 list in
   request order; allOrNone rolls back. Bulk jobs process at the
   `polls_to_complete`-th GET after UploadComplete, in internal batches of 10,000, and
   serve their results as CSV in shuffled order, as Salesforce does not keep upload order.

State lives in memory; `state()`, `records()` and GET /_emulator/state show it to tests.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from retl_assets.emulators.common import (
    BaseEmulator,
    Faults,
    Process,
    RateWindow,
    Refused,
    Reply,
    base_stats,
    emulator_app,
)
from retl_assets.emulators.salesforce.store import (
    OPERATIONS,
    TERMINAL,
    TYPE_HINT,
    IngestJob,
    Org,
    SObjectType,
    error,
    now_iso,
    run_job,
)

MAX_RECORDS = 200  # per sObject Collections request
# The versions served, oldest to newest: 68.0 is Winter '27, the current release; 21.0 to
# 30.0 are retired. Endpoints need more: Bulk API 2.0 41.0, collections upsert 46.0.
VERSIONS = (31.0, 68.0)
TOTAL = "TotalRequests Limit exceeded."
CONCURRENT = "ConcurrentRequests (Concurrent API Requests) Limit exceeded."


def sf_error(status: int, code: str, message: str) -> Refused:
    """Salesforce's whole-request error: a JSON list of {message, errorCode}."""
    return Refused(status, [{"message": message, "errorCode": code}])


class SalesforceEmulator(BaseEmulator):
    """One org behind `build_salesforce_app`.

    tokens: accepted bearer tokens (session ids); None or empty accepts any.
    objects: the org's objects (default Account, Contact, Lead, each with External_Id__c as
        external id); any custom `X__c` exists too, with no required field.
    daily_limit / day_seconds: the API request allocation and its rolling window (a real org
        has 100,000 plus a per-licence amount per 24 h; tests scale the window down).
    concurrent_limit: requests in flight at once. Salesforce counts only requests running
        20 s or more (25 in production, 5 in Developer Edition); the emulator, stricter,
        counts every request in flight.
    polls_to_complete: GETs of a closed bulk job before it has been processed.
    bulk_records_per_day: records bulk jobs may process in a day (150,000,000).
    max_body_bytes: largest JSON body (emulator choice; Salesforce publishes none we found).
    max_upload_bytes: largest bulk upload (150 MB of base64, so about 100 MB of CSV).
    """

    error_statuses = (500, 503)

    def __init__(
        self,
        tokens: set[str] | None = None,
        *,
        objects: dict[str, SObjectType] | None = None,
        daily_limit: int = 100_000,
        day_seconds: float = 86_400.0,
        concurrent_limit: int = 25,
        polls_to_complete: int = 2,
        bulk_records_per_day: int = 150_000_000,
        max_body_bytes: int = 6 * 1024 * 1024,
        max_upload_bytes: int = 100 * 1024 * 1024,
        lock_rate: float = 0.0,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        if daily_limit < 1 or day_seconds <= 0 or concurrent_limit < 1 or polls_to_complete < 1:
            raise ValueError("limits must be positive")
        super().__init__(faults, seed)
        self.tokens = set(tokens or ())
        self.daily_limit = daily_limit
        self.concurrent_limit = concurrent_limit
        self.polls_to_complete = polls_to_complete
        self.bulk_records_per_day = bulk_records_per_day
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        # Fraction of records answered UNABLE_TO_LOCK_ROW (another transaction holds them):
        # transient, the same record lands when sent again.
        self.lock_rate = lock_rate
        self.org = Org(objects=dict(objects)) if objects is not None else Org()
        self.jobs: dict[str, IngestJob] = {}
        self._window = RateWindow(daily_limit, day_seconds)
        self._shuffle = random.Random(seed)
        self._in_flight = 0
        self._clear()

    def _clear(self) -> None:
        self.org.clear()
        self.jobs.clear()
        self._window.clear()
        self._bulk_used = 0
        self.stats = {
            **base_stats(),
            "daily_requests": 0,
            "max_concurrent": 0,
            "limit_exceeded": {"TotalRequests": 0, "ConcurrentRequests": 0},
            "bulk_records": 0,
            "contract_violations": [],
        }

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "objects": {name: self.org.snapshot(name) for name in sorted(self.org.objects)},
                "jobs": {jid: job.info() for jid, job in self.jobs.items()},
                "stats": {**self.stats_copy(), **self.org.counts},
            }

    def records(self, sobject: str) -> dict[str, dict[str, Any]]:
        """{Salesforce id: fields} of one object's live (not deleted) records."""
        with self._lock:
            return self.org.snapshot(sobject)

    def restore_allowance(self) -> None:
        """Forget the daily window, as if a day had passed (records stay)."""
        with self._lock:
            self._window.clear()

    # -- the shared pipeline's hooks ----------------------------------------------------------

    async def respond(self, request: Request, process: Process) -> Response:
        with self._lock:
            self._in_flight += 1
            self.stats["max_concurrent"] = max(self.stats["max_concurrent"], self._in_flight)
        try:
            response = await super().respond(request, process)
        finally:
            with self._lock:
                self._in_flight -= 1
        text = getattr(request.state, "csv", None)
        if text is None or response.status_code != 200:
            return response
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-type")}
        return Response(text, status_code=200, headers=headers, media_type="text/csv")

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "oauth") or not token or (
                self.tokens and token not in self.tokens):
            # Never echo the token: error bodies end up in logs.
            raise sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with self._lock:
            now = time.monotonic()
            if self._in_flight > self.concurrent_limit:
                self._window.observe(now)
                self.stats["max_requests_in_window"] = self._window.max_seen
                self.stats["limit_exceeded"]["ConcurrentRequests"] += 1
                raise sf_error(403, "REQUEST_LIMIT_EXCEEDED", CONCURRENT)
            refused = self._window.arrive(now) is not None
            self.stats["max_requests_in_window"] = self._window.max_seen
            if refused:
                self.stats["limit_exceeded"]["TotalRequests"] += 1
                raise sf_error(403, "REQUEST_LIMIT_EXCEEDED", TOTAL)
            self.stats["daily_requests"] += 1
            used = self.daily_limit - self._window.remaining(now)
            return {"Sforce-Limit-Info": f"api-usage={used}/{self.daily_limit}"}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        refused = sf_error(403, "REQUEST_LIMIT_EXCEEDED", CONCURRENT)
        refused.headers = headers
        return refused

    def _fault_body(self, status: int) -> Any:
        if status == 503:
            return [{"message": "Server temporarily unavailable",
                     "errorCode": "SERVER_UNAVAILABLE"}]
        return [{"message": "An unexpected error occurred. Please include this ErrorId if you "
                            "contact support: 1234567890-1 (-1)", "errorCode": "UNKNOWN_EXCEPTION"}]

    def _violation(self, reason: str) -> None:
        """A request a correct client never sends; the caller holds the lock."""
        self.stats["contract_violations"].append({"reason": reason})

    # -- helpers ------------------------------------------------------------------------------

    def _version(self, request: Request, minimum: float) -> str:
        text = request.path_params["version"]
        try:
            number = float(text)
        except ValueError:
            number = 0.0
        if not (max(minimum, VERSIONS[0]) <= number <= VERSIONS[1]) or "." not in text:
            raise sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return text

    async def versions(self, request: Request) -> Response:
        """GET /services/data/: every version served, oldest first, as Salesforce lists
        them ({label, url, version}); it needs no session, so it skips the gate."""
        return JSONResponse([
            {"label": release_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(int(VERSIONS[0]), int(VERSIONS[1]) + 1)
        ])

    async def _body(self, request: Request, limit: int) -> bytes:
        raw = await request.body()
        if len(raw) > limit:
            with self._lock:
                self._violation(f"body of {len(raw)} bytes (limit {limit})")
            raise sf_error(413, "REQUEST_ENTITY_TOO_LARGE",
                           f"Request body is larger than {limit} bytes")
        return raw

    async def _json(self, request: Request) -> Any:
        raw = await self._body(request, self.max_body_bytes)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise sf_error(400, "JSON_PARSER_ERROR", f"Unexpected input: {exc}") from None

    def _sobject(self, name: str) -> SObjectType:
        sobject = self.org.sobject(name)
        if sobject is None:
            raise sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return sobject

    # -- REST endpoints -----------------------------------------------------------------------

    async def limits(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 29.0)
        with self._lock:
            remaining = self._window.remaining(time.monotonic())
            bulk_left = max(self.bulk_records_per_day - self._bulk_used, 0)
        return Reply(200, {
            "DailyApiRequests": {"Max": self.daily_limit, "Remaining": remaining},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2IngestRecords": {"Max": self.bulk_records_per_day,  # emulator name
                                         "Remaining": bulk_left},
        })

    async def upsert(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 46.0)
        body = await self._json(request)
        name, id_field = request.path_params["sobject"], request.path_params["field"]
        with self._lock:
            sobject = self._sobject(name)
            if id_field not in sobject.external_ids:
                self._violation(f"{id_field} is not an external id of {name}")
                raise sf_error(404, "NOT_FOUND", "Provided external ID field does not exist or "
                               f"is not accessible: {id_field}")
            records, all_or_none = self._collection(body, sobject)
            values = [_flatten(r) for r in records]
            unknown = self.org.unknown_fields(sobject, [k for v in values for k in v])
            if unknown:
                raise sf_error(400, "INVALID_FIELD",
                               f"No such column '{unknown[0]}' on sobject of type {name}")
            extras = self._extras(values, id_field, faults)
            if all_or_none:
                checked = [self.org.upsert(sobject, id_field, v, x, apply=False)
                           for v, x in zip(values, extras)]
                if not all(r["success"] for r in checked):
                    return Reply(200, _rolled_back(checked))
            return Reply(200, [self.org.upsert(sobject, id_field, v, x)
                               for v, x in zip(values, extras)])

    def _collection(self, body: Any, sobject: SObjectType) -> tuple[list[dict], bool]:
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            self._violation("body is not {allOrNone, records: [...]}")
            raise sf_error(400, "JSON_PARSER_ERROR", "Expected {\"records\": [ ... ]}")
        if len(records) > MAX_RECORDS:
            self._violation(f"{len(records)} records in one request (limit {MAX_RECORDS})")
            raise sf_error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more "
                           f"than {MAX_RECORDS} records into this call")
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise sf_error(400, "JSON_PARSER_ERROR", "allOrNone must be true or false")
        for i, record in enumerate(records):
            kind = (record.get("attributes") or {}).get("type") \
                if isinstance(record.get("attributes"), dict) else None
            if kind != sobject.name:
                self._violation(f"record {i} has type {kind!r}, not {sobject.name}")
                raise sf_error(400, "INVALID_TYPE", f"Record {i}: attributes.type must be "
                               f"{sobject.name} (all records of the URI's object)")
        return records, all_or_none

    def _extras(self, values: list[dict], id_field: str, faults: Faults) -> list[list[dict]]:
        """Errors a record gets from its neighbours (a duplicate) or from a fault."""
        counts: dict[str, int] = {}
        for v in values:
            key = str(v.get(id_field, "")).strip().lower()
            counts[key] = counts.get(key, 0) + 1
        extras = []
        for v in values:
            extra = []
            value = v.get(id_field)
            if value not in (None, "") and counts[str(value).strip().lower()] > 1:
                extra.append(error("DUPLICATE_VALUE",
                                   f"Duplicate external id specified: {value}", [id_field]))
            if faults.poisons(v):
                extra.append(error("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                   "Value refused by the emulator's poison fault"))
            if self.lock_rate and self._rng.random() < self.lock_rate:
                extra.append(error("UNABLE_TO_LOCK_ROW",
                                   "unable to obtain exclusive access to this record"))
            extras.append(extra)
        return extras

    async def delete(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 42.0)
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
        with self._lock:
            if not ids:
                self._violation("delete without ids")
                raise sf_error(400, "MISSING_ARGUMENT", "ids not specified")
            if len(ids) > MAX_RECORDS:
                self._violation(f"{len(ids)} ids in one delete (limit {MAX_RECORDS})")
                raise sf_error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit "
                               f"more than {MAX_RECORDS} records into this call")
            if all_or_none:
                checked = [self.org.delete(i, apply=False) for i in ids]
                if not all(r["success"] for r in checked):
                    return Reply(200, _rolled_back(checked))
            return Reply(200, [self.org.delete(i) for i in ids])

    # -- Bulk API 2.0 -------------------------------------------------------------------------

    async def create_job(self, request: Request, faults: Faults) -> Reply:
        version = self._version(request, 41.0)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise sf_error(400, "JSON_PARSER_ERROR", "Expected a job definition object")
        with self._lock:
            sobject = self.org.sobject(str(body.get("object", "")))
            if sobject is None:
                raise sf_error(400, "INVALIDENTITY", f"Entity '{body.get('object')}' is not "
                               "supported by the Bulk API.")
            operation = body.get("operation")
            if operation not in OPERATIONS:
                raise sf_error(400, "INVALIDJOB", f"operation must be one of {OPERATIONS} "
                               "(the operations the emulator serves)")
            external_id = body.get("externalIdFieldName")
            if operation == "upsert" and external_id not in sobject.external_ids:
                self._violation(f"upsert job by {external_id!r}, not an external id")
                raise sf_error(400, "INVALIDJOB", "externalIdFieldName must name an external "
                               f"id field of {sobject.name}")
            if body.get("contentType", "CSV") != "CSV" or body.get(
                    "columnDelimiter", "COMMA") != "COMMA":
                raise sf_error(400, "INVALIDJOB", "contentType must be CSV, columnDelimiter "
                               "COMMA (the only ones the emulator serves)")
            line_ending = body.get("lineEnding", "LF")
            if line_ending not in ("LF", "CRLF"):
                raise sf_error(400, "INVALIDJOB", "lineEnding must be LF or CRLF")
            jid = f"7505g{len(self.jobs) + 1:010d}AAA"
            job = IngestJob(jid, sobject.name, operation, external_id, line_ending, version,
                            now_iso())
            self.jobs[jid] = job
            return Reply(200, job.info())

    def _job(self, request: Request) -> IngestJob:
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            raise sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    async def upload(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 41.0)
        raw = await self._body(request, self.max_upload_bytes)
        with self._lock:
            job = self._job(request)
            if not request.headers.get("content-type", "").startswith("text/csv"):
                self._violation("bulk upload without Content-Type: text/csv")
                raise sf_error(400, "INVALIDCONTENTTYPE", "Content-Type must be text/csv")
            if job.data is not None:
                self._violation("a second upload to one job")
                raise sf_error(400, "BULK_API_ERROR", f"Found multiple contents for job: "
                               f"<{job.id}>, please 'Close' / 'Abort' / 'Delete' the current "
                               "Job then create a new Job and make sure you only do 'PUT' "
                               "once on a given Job.")
            if job.state != "Open":
                raise sf_error(409, "INVALIDJOBSTATE", f"Job {job.id} is not Open")
            job.data = raw.decode("utf-8")
            return Reply(201)

    async def change_job(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 41.0)
        body = await self._json(request)
        state = body.get("state") if isinstance(body, dict) else None
        with self._lock:
            job = self._job(request)
            if state == "UploadComplete" and job.state == "Open":
                job.state, job.polls = "UploadComplete", 0
            elif state == "Aborted" and job.state not in TERMINAL:
                job.state = "Aborted"
                rows = list(csv.reader(io.StringIO(job.data or "", newline="")))
                job.header, job.unprocessed = (rows[0], rows[1:]) if rows else ([], [])
            else:
                raise sf_error(409, "INVALIDJOBSTATE",
                               f"Cannot change job {job.id} from {job.state} to {state}")
            return Reply(200, job.info())

    async def job_info(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 41.0)
        with self._lock:
            job = self._job(request)
            if job.state in ("UploadComplete", "InProgress"):
                job.polls += 1
                job.state = "InProgress"
                if job.polls >= self.polls_to_complete:
                    left = max(self.bulk_records_per_day - self._bulk_used, 0)
                    self._bulk_used += run_job(self.org, job, faults.poisons, left)
                    self.stats["bulk_records"] = self._bulk_used
                    self._shuffle.shuffle(job.successful)
                    self._shuffle.shuffle(job.failed)
            return Reply(200, job.info())

    async def delete_job(self, request: Request, faults: Faults) -> Reply:
        self._version(request, 41.0)
        with self._lock:
            job = self._job(request)
            if job.state not in TERMINAL and job.state != "Open":
                raise sf_error(409, "INVALIDJOBSTATE", f"Job {job.id} is still {job.state}")
            del self.jobs[job.id]
            return Reply(204)

    def results(self, kind: str) -> Process:
        async def handler(request: Request, faults: Faults) -> Reply:
            self._version(request, 41.0)
            with self._lock:
                job = self._job(request)
                if job.state not in TERMINAL:
                    raise sf_error(409, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}; "
                                   "results come once it is complete")
                header, rows = {
                    "successfulResults": (["sf__Id", "sf__Created"], job.successful),
                    "failedResults": (["sf__Id", "sf__Error"], job.failed),
                    "unprocessedRecords": ([], job.unprocessed),
                }[kind]
                out = io.StringIO()
                writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
                writer.writerow([*header, *job.header])
                writer.writerows(rows)
            request.state.csv = out.getvalue()
            return Reply(200)

        return handler


def release_label(version: int) -> str:
    """Salesforce's release name of an API version: 41 is Winter '18, 68 Winter '27."""
    step = version - 41
    return f"{('Winter', 'Spring', 'Summer')[step % 3]} '{18 + step // 3:02d}"


def _flatten(record: dict[str, Any], nested: bool = False) -> dict[str, Any]:
    """A record's fields, relationship references (`Account: {External_Id__c: x}`) as
    `Account.External_Id__c`, the same names a bulk CSV header uses; a reference's own
    `attributes.type` (a polymorphic or custom lookup's parent) is kept for the org."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            if nested and isinstance(value, dict) and isinstance(value.get("type"), str):
                out[TYPE_HINT] = value["type"]
            continue
        if isinstance(value, dict):
            for sub, inner in _flatten(value, nested=True).items():
                out[f"{key}.{sub}"] = inner
        elif isinstance(value, list):
            raise sf_error(400, "JSON_PARSER_ERROR",
                           f"Cannot deserialize a list into field {key}")
        else:
            out[key] = value
    return out


def _rolled_back(checked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """allOrNone with a failure: nothing is saved; the good records say why."""
    return [r if not r["success"] else {
        "id": None, "success": False, **({"created": False} if "created" in r else {}),
        "errors": [error("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not "
                         "all records were valid and the request was using AllOrNone header")],
    } for r in checked]


def build_salesforce_app(emulator: SalesforceEmulator) -> Starlette:
    """The HTTP face of `emulator`: Salesforce's routes plus the admin routes (common.py)."""

    data = "/services/data/v{version}"
    job = f"{data}/jobs/ingest/{{job}}"
    limits = emulator.endpoint(emulator.limits)
    routes: list[BaseRoute] = [
        Route("/services/data", emulator.versions, methods=["GET"]),
        Route("/services/data/", emulator.versions, methods=["GET"]),
        # simple-salesforce asks for `limits/`; Salesforce answers both spellings.
        Route(f"{data}/limits", limits, methods=["GET"]),
        Route(f"{data}/limits/", limits, methods=["GET"]),
        Route(f"{data}/composite/sobjects/{{sobject}}/{{field}}", emulator.endpoint(emulator.upsert),
              methods=["PATCH"]),
        Route(f"{data}/composite/sobjects", emulator.endpoint(emulator.delete), methods=["DELETE"]),
        Route(f"{data}/jobs/ingest", emulator.endpoint(emulator.create_job), methods=["POST"]),
        Route(job, emulator.endpoint(emulator.job_info), methods=["GET"]),
        Route(job, emulator.endpoint(emulator.change_job), methods=["PATCH"]),
        Route(job, emulator.endpoint(emulator.delete_job), methods=["DELETE"]),
        Route(f"{job}/batches", emulator.endpoint(emulator.upload), methods=["PUT"]),
    ]
    # Salesforce's reference spells `unprocessedrecords/`; simple-salesforce asks for
    # `unprocessedRecords` (and results without the trailing slash): serve every spelling.
    spellings = {"successfulResults": ("successfulResults",),
                 "failedResults": ("failedResults",),
                 "unprocessedRecords": ("unprocessedRecords", "unprocessedrecords")}
    for kind, names in spellings.items():
        handler = emulator.endpoint(emulator.results(kind))
        for name in names:
            routes += [Route(f"{job}/{name}/", handler, methods=["GET"]),
                       Route(f"{job}/{name}", handler, methods=["GET"])]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate salesforce` serves; `rate_limit` is the daily allocation and
    its window, (requests, seconds)."""
    extra = {"daily_limit": rate_limit[0], "day_seconds": rate_limit[1]} if rate_limit else {}
    return build_salesforce_app(SalesforceEmulator(keys or None, faults=faults, **extra))
