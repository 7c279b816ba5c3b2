"""The BigQuery REST API v2, as google-cloud-bigquery calls it, answered from a DuckDB file.

What a client meets here, in order (common.py runs the first three):
1. faults.dead -> 503 backendError; faults.latency_ms;
2. auth: `Authorization: Bearer <token>` with a token from `tokens` (None: any token), else
   401 (reason "required" when absent, "authError" when wrong); the rate limit, if given
   -> 429 rateLimitExceeded;
3. injected 429s (rateLimitExceeded) and 500s (internalError), the reasons the client's
   default retry looks for;
4. the project must be one the emulator serves (`projects`; None: any) -> 404 notFound;
5. the call itself:
   - jobs.query     POST /projects/{p}/queries           runs the statement, first page
   - jobs.insert    POST /projects/{p}/jobs              runs it; errors land in the job
   - jobs.get       GET  /projects/{p}/jobs/{id}
   - jobs.cancel    POST /projects/{p}/jobs/{id}/cancel  (jobs are done when created)
   - getQueryResults GET /projects/{p}/queries/{id}      maxResults, pageToken, startIndex
   - datasets.get   GET  /projects/{p}/datasets/{d}
   - tables.get     GET  /projects/{p}/datasets/{d}/tables/{t}
   - tabledata.list GET  /projects/{p}/datasets/{d}/tables/{t}/data (also a job's
                    anonymous destination table)
   Refusals carry BigQuery's error shape {"error": {"code", "message", "errors": [{"reason",
   "message", "domain"}], "status"}}: 400 invalidQuery (bad SQL, legacy SQL), 404 notFound
   (dataset, table, job), 403 accessDenied (a table outside `allow`).
6. POST /token, outside the API (no bearer needed): Google's OAuth 2.0 token endpoint for
   a service account's key file whose token_uri points here. A JWT-bearer grant whose `iss`
   is one of `service_accounts` (its RS256 signature checked against the account's public
   key, when one is given) is answered with a fresh access token, which the API then
   accepts; anything else is 400 invalid_grant.
A page holds at most maxResults rows (no maximum by default) and at most `max_page_bytes`
of rows (10 MB, as the API caps a response), never less than one row.

Every query runs at once, so a job is DONE when created; its rows stay in memory (the last
`keep_jobs` jobs) for paging. Statements other than SELECT run against the file too, opened
read-write, and are reported with their honest statementType.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retl_assets.emulators.bigquery.store import (
    QueryRefused,
    Result,
    Warehouse,
    bq_schema,
    encode_rows,
    etag,
)
from retl_assets.emulators.common import (
    BaseEmulator,
    Faults,
    RateWindow,
    Refused,
    Reply,
    admin_routes,
    base_stats,
)

BASE = "/bigquery/v2"
MAX_PAGE_BYTES = 10 * 1024 * 1024  # "The maximum response size is 10 MB"

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}


def error_body(status: int, reason: str, message: str, location: str | None = None,
               location_type: str | None = None) -> dict[str, Any]:
    """BigQuery's (Google APIs') JSON error."""
    item: dict[str, Any] = {"message": message, "domain": "global", "reason": reason}
    if location:
        item["location"] = location
        item["locationType"] = location_type or "other"
    return {"error": {"code": status, "message": message, "errors": [item],
                      "status": STATUS_NAMES.get(status, "UNKNOWN")}}


def refusal(status: int, reason: str, message: str, location: str | None = None) -> Refused:
    return Refused(status, error_body(status, reason, message, location))


class BigQueryEmulator(BaseEmulator):
    """BigQuery's REST API over one DuckDB file.

    tokens: accepted bearer tokens; None accepts any (the header is still required).
    projects: project ids served; None serves any. allow: "dataset.table" (or "dataset.*")
        names that may be read or changed; None allows every table.
    """

    error_statuses = (500,)

    def __init__(self, database: str | Path, *, tokens: set[str] | None = None,
                 projects: set[str] | None = None, allow: set[str] | None = None,
                 location: str = "US", rate_limit: tuple[int, float] | None = None,
                 max_page_bytes: int = MAX_PAGE_BYTES, keep_jobs: int = 32,
                 service_accounts: dict[str, bytes | None] | None = None,
                 faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(faults, seed)
        self.service_accounts = dict(service_accounts or {})  # email -> public key PEM
        self.warehouse = Warehouse(database, allow)
        self.tokens = set(tokens) if tokens is not None else None
        self.projects = set(projects) if projects is not None else None
        self.location = location
        self.max_page_bytes = max_page_bytes
        self.keep_jobs = keep_jobs
        self._window = RateWindow(*(rate_limit or (None, 1.0)))
        self._clear()

    @property
    def allow(self) -> set[str] | None:
        return self.warehouse.allow

    @allow.setter
    def allow(self, value: set[str] | None) -> None:
        self.warehouse.allow = set(value) if value is not None else None

    def _clear(self) -> None:
        self._jobs: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._requests: dict[str, tuple[str, str]] = {}  # requestId -> job
        self._window.clear()
        self.stats = {**base_stats(), "queries": 0, "pages": 0, "rows_sent": 0,
                      "calls": {}, "page_sizes": [], "rate_limited": 0}

    def state(self) -> dict[str, Any]:
        with self._lock:
            jobs = [{"jobId": k[1], "project": k[0], "query": j["job"]["configuration"]
                     ["query"]["query"], "state": j["job"]["status"]["state"],
                     "statementType": j["job"]["statistics"]["query"]["statementType"]}
                    for k, j in self._jobs.items()]
            return {"jobs": jobs, "stats": self.stats_copy()}

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _fault_body(self, status: int) -> Any:
        if status == 503:
            return error_body(503, "backendError", "The service is currently unavailable.")
        return error_body(status, "internalError", "An internal error occurred and the "
                          "request could not be completed.")

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return Refused(429, error_body(429, "rateLimitExceeded", "Exceeded rate limits: too "
                                       "many api requests per user per method for this "
                                       "user_method. For more information, see "
                                       "https://cloud.google.com/bigquery/docs/troubleshoot-quotas"),
                       headers)

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise refusal(401, "required", "Request is missing required authentication "
                          "credential. Expected OAuth 2 access token, login cookie or other "
                          "valid authentication credential.", "Authorization")
        if scheme.lower() != "bearer" or not token.strip() or (
                self.tokens is not None and token.strip() not in self.tokens):
            raise refusal(401, "authError", "Request had invalid authentication credentials. "
                          "Expected OAuth 2 access token, login cookie or other valid "
                          "authentication credential.", "Authorization")
        wait = self._arrive(self._window)
        if wait is not None:
            raise self._injected_429(faults, {})
        return {}

    def _count(self, call: str) -> None:
        with self._lock:
            calls = self.stats["calls"]
            calls[call] = calls.get(call, 0) + 1

    def _project(self, request: Request) -> str:
        project = request.path_params["project"]
        if self.projects is not None and project not in self.projects:
            raise refusal(404, "notFound", f"Not found: Project {project}")
        return project

    # -- OAuth ---------------------------------------------------------------------------------

    async def token(self, request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self._count("oauth.token")
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        account = _jwt_issuer(str(form.get("assertion") or ""), self.service_accounts)
        if account is None:
            return JSONResponse({"error": "invalid_grant",
                                 "error_description": "Invalid JWT Signature."},
                                status_code=400)
        issued = "ya29.emulator-" + uuid.uuid4().hex
        with self._lock:
            if self.tokens is not None:
                self.tokens.add(issued)
        return JSONResponse({"access_token": issued, "expires_in": 3599,
                             "token_type": "Bearer"})

    # -- jobs ---------------------------------------------------------------------------------

    async def jobs_query(self, request: Request, faults: Faults) -> Reply:
        self._count("jobs.query")
        project = self._project(request)
        body = await _json(request)
        if not isinstance(body.get("query"), str):
            raise refusal(400, "invalid", "Required parameter is missing: query")
        request_id = body.get("requestId")
        with self._lock:
            known = self._requests.get(request_id) if request_id else None
            entry = self._jobs.get(known) if known is not None else None
        if entry is None:  # a retried request (same requestId) gets the same job
            config = {"query": body["query"], "useLegacySql": body.get("useLegacySql", True)}
            if body.get("defaultDataset"):
                config["defaultDataset"] = body["defaultDataset"]
            entry = await self._run(project, None, config, body.get("location"))
            if request_id:
                with self._lock:
                    self._requests[request_id] = _key(entry["job"])
        error = entry["job"]["status"].get("errorResult")
        if error:
            raise refusal(entry["status"], error["reason"], error["message"],
                          error.get("location"))
        params = _params(body.get("maxResults"), None, None,
                         _flag((body.get("formatOptions") or {}).get("useInt64Timestamp")))
        return Reply(200, self._results(entry, "bigquery#queryResponse", *params))

    async def jobs_insert(self, request: Request, faults: Faults) -> Reply:
        self._count("jobs.insert")
        project = self._project(request)
        body = await _json(request)
        config = (body.get("configuration") or {}).get("query")
        if not isinstance(config, dict) or not isinstance(config.get("query"), str):
            raise refusal(400, "invalid", "The emulator runs query jobs only: "
                          "configuration.query.query is required")
        reference = body.get("jobReference") or {}
        job_id = reference.get("jobId") or uuid.uuid4().hex
        with self._lock:
            if (project, job_id) in self._jobs:
                raise refusal(409, "duplicate", f"Already Exists: Job {project}:"
                              f"{self.location}.{job_id}")
        entry = await self._run(project, job_id, config, reference.get("location"))
        return Reply(200, entry["job"])

    async def jobs_get(self, request: Request, faults: Faults) -> Reply:
        self._count("jobs.get")
        entry = self._job(self._project(request), request.path_params["job"])
        return Reply(200, entry["job"])

    async def jobs_cancel(self, request: Request, faults: Faults) -> Reply:
        self._count("jobs.cancel")
        entry = self._job(self._project(request), request.path_params["job"])
        return Reply(200, {"kind": "bigquery#jobCancelResponse", "job": entry["job"]})

    async def get_query_results(self, request: Request, faults: Faults) -> Reply:
        self._count("jobs.getQueryResults")
        entry = self._job(self._project(request), request.path_params["job"])
        error = entry["job"]["status"].get("errorResult")
        if error:
            raise refusal(entry["status"], error["reason"], error["message"],
                          error.get("location"))
        q = request.query_params
        params = _params(q.get("maxResults"), q.get("pageToken"), q.get("startIndex"),
                         _flag(q.get("formatOptions.useInt64Timestamp")))
        return Reply(200, self._results(entry, "bigquery#getQueryResultsResponse", *params))

    async def _run(self, project: str, job_id: str | None, config: dict[str, Any],
                   location: str | None) -> dict[str, Any]:
        """Run a query job to completion; the job records a refusal in its status."""
        job_id = job_id or uuid.uuid4().hex
        location = location or self.location
        created = _now_ms()
        default = config.get("defaultDataset") or None
        default_ref = (default.get("projectId") or project, default["datasetId"]) \
            if default and default.get("datasetId") else None
        status = 200
        result: Result | None = None
        error = None
        if _flag(config.get("useLegacySql", True)):
            status, error = 400, {"reason": "invalidQuery", "location": "query", "message":
                                  "The emulator speaks GoogleSQL only: set useLegacySql to "
                                  "false"}
        else:
            try:
                result = await run_in_threadpool(self.warehouse.run, config["query"], project,
                                                 default_ref)
            except QueryRefused as e:
                status = e.status
                error = {"reason": e.reason, "message": e.message}
                if e.location:
                    error["location"] = e.location
            except Exception as e:  # noqa: BLE001 - the emulator's own gap: say so, and fast (not retried)
                status, error = 501, {"reason": "notImplemented", "message":
                                      f"the emulator cannot run this: {type(e).__name__}: {e}"}
        ended = _now_ms()
        reference = {"projectId": project, "jobId": job_id, "location": location}
        query_config: dict[str, Any] = {"query": config["query"], "useLegacySql": False,
                                        "priority": config.get("priority", "INTERACTIVE")}
        if default_ref:
            query_config["defaultDataset"] = {"projectId": default_ref[0],
                                              "datasetId": default_ref[1]}
        stats: dict[str, Any] = {"creationTime": str(created), "startTime": str(created),
                                 "endTime": str(ended), "totalBytesProcessed": "0",
                                 "query": {"statementType": "SELECT", "cacheHit": False,
                                           "totalBytesProcessed": "0",
                                           "totalBytesBilled": "0"}}
        job: dict[str, Any] = {
            "kind": "bigquery#job", "id": f"{project}:{location}.{job_id}",
            "selfLink": f"{BASE}/projects/{project}/jobs/{job_id}?location={location}",
            "user_email": "emulator@retl.local", "jobReference": reference,
            "configuration": {"jobType": "QUERY", "query": query_config},
            "statistics": stats, "status": {"state": "DONE"},
        }
        if error is not None:
            job["status"]["errorResult"] = error
            job["status"]["errors"] = [dict(error)]
        elif result is not None:
            stats["query"]["statementType"] = result.statement_type
            stats["query"]["referencedTables"] = [
                {"projectId": project, "datasetId": d, "tableId": t} for d, t in result.referenced]
            if result.table is not None:
                size = str(result.table.nbytes)
                stats["totalBytesProcessed"] = stats["query"]["totalBytesProcessed"] = size
                stats["query"]["schema"] = {"fields": result.schema}
                query_config["destinationTable"] = {
                    "projectId": project, "datasetId": "_" + etag(project).replace(
                        "/", "_").replace("+", "_").rstrip("="), "tableId": "anon" + job_id}
                query_config["writeDisposition"] = "WRITE_TRUNCATE"
            if result.affected is not None:
                stats["query"]["numDmlAffectedRows"] = str(result.affected)
        job["etag"] = etag(job_id, created)
        entry = {"job": job, "result": result, "status": status}
        with self._lock:
            self.stats["queries"] += 1
            self._jobs[(project, job_id)] = entry
            while len(self._jobs) > self.keep_jobs:
                self._jobs.popitem(last=False)
        return entry

    def _job(self, project: str, job_id: str) -> dict[str, Any]:
        with self._lock:
            entry = self._jobs.get((project, job_id))
        if entry is None:
            raise refusal(404, "notFound", f"Not found: Job {project}:{self.location}.{job_id}")
        return entry

    def _results(self, entry: dict[str, Any], kind: str, max_results: int | None,
                 offset: int, int64_timestamp: bool) -> dict[str, Any]:
        job, result = entry["job"], entry["result"]
        out: dict[str, Any] = {"kind": kind, "etag": job["etag"],
                               "jobReference": job["jobReference"], "jobComplete": True,
                               "cacheHit": False, "location": job["jobReference"]["location"],
                               "totalBytesProcessed": job["statistics"]["totalBytesProcessed"]}
        stats = job["statistics"]["query"]
        if "numDmlAffectedRows" in stats:
            out["numDmlAffectedRows"] = stats["numDmlAffectedRows"]
        if result is None or result.table is None:
            return out
        out["schema"] = {"fields": result.schema}
        out.update(self._page(result, max_results, offset, int64_timestamp))
        return out

    def _page(self, result: Result, max_results: int | None, offset: int,
              int64_timestamp: bool) -> dict[str, Any]:
        table = result.table
        assert table is not None
        total = table.num_rows
        out: dict[str, Any] = {"totalRows": str(total)}
        want = total - offset if max_results is None else min(max_results, total - offset)
        rows: list[dict[str, Any]] = []
        size = 0
        start = offset
        while want > 0 and start < total:
            chunk = encode_rows(table.slice(start, min(want, 1000)), result.schema,
                                int64_timestamp)
            length = len(json.dumps(chunk))
            if size + length > self.max_page_bytes:
                for row in chunk:  # the last chunk that fits only in part: row by row
                    length = len(json.dumps(row)) + 1
                    if size + length > self.max_page_bytes and rows:
                        want = 0
                        break
                    rows.append(row)
                    size += length
                break
            rows.extend(chunk)
            size += length
            start += len(chunk)
            want -= len(chunk)
        if rows:
            out["rows"] = rows
        end = offset + len(rows)
        if rows and end < total:
            out["pageToken"] = _token(end)
        with self._lock:
            self.stats["pages"] += 1
            self.stats["rows_sent"] += len(rows)
            self.stats["page_sizes"].append(len(rows))
        return out

    # -- datasets and tables ------------------------------------------------------------------

    async def datasets_get(self, request: Request, faults: Faults) -> Reply:
        self._count("datasets.get")
        project = self._project(request)
        dataset = request.path_params["dataset"]
        if dataset not in await run_in_threadpool(self.warehouse.datasets):
            raise refusal(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        return Reply(200, {"kind": "bigquery#dataset", "id": f"{project}:{dataset}",
                           "etag": etag(project, dataset),
                           "datasetReference": {"projectId": project, "datasetId": dataset},
                           "location": self.location, "type": "DEFAULT"})

    async def tables_get(self, request: Request, faults: Faults) -> Reply:
        self._count("tables.get")
        project, dataset, table = self._table_path(request)
        anon = self._anonymous(project, dataset, table)
        if anon is not None:
            result = anon["result"]
            facts = {"schema": result.schema, "numRows": str(result.table.num_rows),
                     "lastModifiedTime": anon["job"]["statistics"]["endTime"],
                     "creationTime": anon["job"]["statistics"]["endTime"]}
        else:
            await self._readable(project, dataset, table)
            facts = await run_in_threadpool(self.warehouse.describe, dataset, table)
        return Reply(200, {
            "kind": "bigquery#table", "id": f"{project}:{dataset}.{table}",
            "etag": etag(project, dataset, table, facts["lastModifiedTime"]),
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "type": "TABLE", "location": self.location, "schema": {"fields": facts["schema"]},
            "numRows": facts["numRows"], "creationTime": facts["creationTime"],
            "lastModifiedTime": facts["lastModifiedTime"]})

    async def tabledata_list(self, request: Request, faults: Faults) -> Reply:
        self._count("tabledata.list")
        project, dataset, table = self._table_path(request)
        anon = self._anonymous(project, dataset, table)
        if anon is not None:
            result = anon["result"]
        else:
            await self._readable(project, dataset, table)
            rows = await run_in_threadpool(self.warehouse.table_rows, dataset, table)
            result = Result("SELECT", rows, bq_schema(rows.schema))
        q = request.query_params
        params = _params(q.get("maxResults"), q.get("pageToken"), q.get("startIndex"),
                         _flag(q.get("formatOptions.useInt64Timestamp")))
        return Reply(200, {"kind": "bigquery#tableDataList", "etag": etag(dataset, table),
                           **self._page(result, *params)})

    def _table_path(self, request: Request) -> tuple[str, str, str]:
        return (self._project(request), request.path_params["dataset"],
                request.path_params["table"])

    def _anonymous(self, project: str, dataset: str, table: str) -> dict[str, Any] | None:
        if not (dataset.startswith("_") and table.startswith("anon")):
            return None
        with self._lock:
            entry = self._jobs.get((project, table[len("anon"):]))
        if entry is None or entry["result"] is None or entry["result"].table is None:
            raise refusal(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        return entry

    async def _readable(self, project: str, dataset: str, table: str) -> None:
        if dataset not in await run_in_threadpool(self.warehouse.datasets):
            raise refusal(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        if table not in await run_in_threadpool(self.warehouse.tables, dataset):
            raise refusal(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        if not self.warehouse.allowed(dataset, table):
            raise refusal(403, "accessDenied", f"Access Denied: Table {project}:{dataset}."
                          f"{table}: Permission bigquery.tables.get denied on table "
                          f"{project}:{dataset}.{table} (or it may not exist).")


# ------------------------------------------------------------------ helpers


def _jwt_issuer(assertion: str, accounts: dict[str, bytes | None]) -> str | None:
    """The service account that signed the JWT, if it is one the emulator knows."""
    try:
        header, payload, signature = assertion.split(".")
        claims = json.loads(_b64url(payload))
        account = claims.get("iss")
        if account not in accounts:
            return None
        public_key = accounts[account]
        if public_key is not None:
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import padding

            key = serialization.load_pem_public_key(public_key)
            key.verify(_b64url(signature), f"{header}.{payload}".encode(),  # type: ignore[union-attr]
                       padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
        return account
    except Exception:  # noqa: BLE001 - a malformed or badly signed assertion: refused alike
        return None


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(job: dict[str, Any]) -> tuple[str, str]:
    ref = job["jobReference"]
    return ref["projectId"], ref["jobId"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _params(max_results: Any, page_token: str | None, start_index: Any,
            int64_timestamp: bool) -> tuple[int | None, int, bool]:
    try:
        limit = None if max_results in (None, "") else int(max_results)
        offset = int(start_index or 0)
        if page_token:
            kind, _, value = base64.urlsafe_b64decode(page_token.encode()).decode().partition(":")
            if kind != "offset":
                raise ValueError(page_token)
            offset = int(value)
    except (ValueError, TypeError):
        raise refusal(400, "invalid", "Invalid maxResults, startIndex or pageToken") from None
    if (limit is not None and limit < 0) or offset < 0:
        raise refusal(400, "invalid", "maxResults and startIndex must not be negative")
    return limit, offset, int64_timestamp


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise refusal(400, "parseError", "Parse Error: the request body is not JSON") from None
    if not isinstance(body, dict):
        raise refusal(400, "invalid", "the request body must be a JSON object")
    return body


def build_bigquery_app(emulator: BigQueryEmulator) -> Starlette:
    e = emulator.endpoint
    p = f"{BASE}/projects/{{project}}"
    routes = [
        Route(f"{p}/queries", e(emulator.jobs_query), methods=["POST"]),
        Route(f"{p}/queries/{{job}}", e(emulator.get_query_results), methods=["GET"]),
        Route(f"{p}/jobs", e(emulator.jobs_insert), methods=["POST"]),
        Route(f"{p}/jobs/{{job}}", e(emulator.jobs_get), methods=["GET"]),
        Route(f"{p}/jobs/{{job}}/cancel", e(emulator.jobs_cancel), methods=["POST"]),
        Route(f"{p}/datasets/{{dataset}}", e(emulator.datasets_get), methods=["GET"]),
        Route(f"{p}/datasets/{{dataset}}/tables/{{table}}", e(emulator.tables_get),
              methods=["GET"]),
        Route(f"{p}/datasets/{{dataset}}/tables/{{table}}/data", e(emulator.tabledata_list),
              methods=["GET"]),
    ]
    routes.append(Route("/token", emulator.token, methods=["POST"]))
    app = Starlette(routes=[*routes, *admin_routes(emulator)])
    app.state.emulator = emulator
    return app


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             limit: tuple[int, float] | None = None, *, database: str | Path,
             allow: set[str] | None = None, projects: set[str] | None = None):
    """The app `retl emulate bigquery` serves: `keys` are the accepted bearer tokens,
    `database` the DuckDB file that answers."""
    return build_bigquery_app(BigQueryEmulator(database, tokens=keys or None, faults=faults,
                                               rate_limit=limit, allow=allow,
                                               projects=projects))
