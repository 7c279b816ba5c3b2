"""Salesforce: upsert by an external id on any object, delete by Salesforce's own id.

Small changesets go through sObject Collections: `PATCH .../composite/sobjects/{SObject}/
{ExternalIdField}` with at most 200 records, answered 200 with one result per record in
request order (allOrNone false, so good records land beside bad ones), and `DELETE
.../composite/sobjects?ids=` with the ids retl kept from the upserts. Large ones can go
through a Bulk API 2.0 ingest job instead (bulk.py; `deliver_bulk`).

Salesforce publishes no per-second limit: an org has a daily allocation of API requests
(403 REQUEST_LIMIT_EXCEEDED "TotalRequests", which stops the run with rows kept owed) and a
cap on long-running concurrent requests (the same code, "Concurrent...": wait and retry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    Record,
    blank,
    first_problem,
    json_batch,
    status_answer,
)
from retl_assets.destinations.delivery import Outcome, Report
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.destinations.salesforce.bulk import GONE, BulkSettings, deliver_bulk, record_error
from retl_assets.destinations.salesforce.config import API_VERSION, SalesforceConfig
from retl_assets.errors import ProjectError
from retl_assets.mapping import Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID

ACTIONS = {"salesforce": ("upsert", MIRROR, "delete")}
MAX_RECORDS = 200  # per sObject Collections request
# Salesforce publishes no body limit for collections that we found; 200 records of a few
# KB each stay far below this.
REQUEST_BYTES = 6 * 1024 * 1024
RECORD_CHARS = 400_000  # Bulk API 2.0's limit per record; fields are 32,000 each
# Per-record errors that pass: another transaction held the row; the record lands when sent
# again (Salesforce's own advice for UNABLE_TO_LOCK_ROW is to retry).
TRANSIENT = frozenset({"UNABLE_TO_LOCK_ROW"})
CONCURRENCY_WAIT_S = 2.0  # Salesforce says nothing of when a concurrent slot frees


class SalesforceDestination:
    def __init__(self, name: str, token: str, instance_url: str,
                 api_version: str = API_VERSION, max_concurrency: int | None = None,
                 batch_size: int | None = None, bulk: BulkSettings | None = None):
        self.name = name
        self.instance_url = instance_url.rstrip("/")
        self.base = f"{self.instance_url}/services/data/v{api_version}"
        self.bulk = bulk or BulkSettings()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.capabilities = Capabilities(
            records_per_request=min(batch_size or MAX_RECORDS, MAX_RECORDS),
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=RECORD_CHARS,
            max_concurrency=max_concurrency or 4,
            rate_limit=None,  # a daily allocation, not a window: see `classify`
            default_retry_after_s=CONCURRENCY_WAIT_S,
            answers="results",  # one result per record, in request order
        )

    def __repr__(self) -> str:
        return f"SalesforceDestination({self.name!r}, {self.instance_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> SalesforceWriter:
        return SalesforceWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base}/limits", headers=self.headers)

    def check_answer(self, response: httpx.Response) -> tuple[bool, str] | None:
        if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in response.text:
            return False, ("the token is good, but the org's API request limit is spent "
                           "(REQUEST_LIMIT_EXCEEDED); syncs wait until it frees up")
        if response.status_code == 404:
            return False, (f"no REST API at {self.base} (check instance_url and api_version)")
        return None


class SalesforceWriter:
    def __init__(self, dest: SalesforceDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self.dest = dest
        self._sync = sync
        if not sync.object:
            raise ProjectError(f"syncs.{sync_name}.object: name the Salesforce object, e.g. "
                               "Contact, Lead, Account or My_Object__c")
        self.object = sync.object
        match = sync.match or {}
        if sync.action != "delete" and len(match) != 1:
            raise ProjectError(f"syncs.{sync_name}.match: give the one external id field to "
                               f"upsert {self.object} by, e.g. {{External_Id__c: id}}")
        if any(path.split(".")[0] == "Id" for path in sync.mapping or {}):
            raise ProjectError(f"syncs.{sync_name}.mapping.Id: an upsert by external id must "
                               "not set Salesforce's Id")
        self.id_field, self.id_column = next(iter(match.items()), ("", ""))
        self.bulk_threshold = dest.bulk.threshold

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "delete"}
        if self._sync.action == "delete":
            return {"deleted": "delete"}
        return {change: "upsert" for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        return Rules(top_level=frozenset(), container=None)  # fields sit on the record

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "delete":
            return {("id",): Raw(DEST_ID)}
        return {("attributes", "type"): Literal(self.object), **mapped,
                (self.id_field,): Raw(f"CAST({quote(self.id_column)} AS VARCHAR)")}

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "delete"

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == "delete":
            return "NULL"
        return first_problem([(blank(payload, f'$."{self.id_field}"'),
                                f"'no value for the external id field {self.id_field} "
                                f"(column {self.id_column})'")])

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        base = f"{self.dest.base}/composite/sobjects"
        if operation == "delete":
            ids = ",".join(r.dest_id or "" for r in records)
            return client.build_request("DELETE", base, headers=self.dest.headers,
                                        params={"ids": ids, "allOrNone": "false"})
        return client.build_request("PATCH", f"{base}/{self.object}/{self.id_field}",
                                    content=json_batch(records, "records", allOrNone=False),
                                    headers=self.dest.headers)

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        failed = self.classify(response)
        if failed:
            return failed
        try:
            results = response.json()
        except ValueError:
            results = None
        if not isinstance(results, list) or len(results) != len(records):
            return Answer("retry", error=f"Salesforce answered {len(records)} records with "
                                         f"{response.text[:200]!r}")
        answer = Answer("ok")
        for i, result in enumerate(results):
            result = result if isinstance(result, dict) else {}
            errors = result.get("errors") or []
            codes = {e.get("statusCode") for e in errors if isinstance(e, dict)}
            if result.get("success"):
                answer.confirmed.add(i)
                if operation == "upsert" and result.get("id"):
                    answer.ids[i] = str(result["id"])
            elif operation == "delete" and codes and codes <= set(GONE):
                answer.confirmed.add(i)  # deleted before: what the delete wanted
            elif _passing(errors):
                answer.again[i] = record_error(errors)  # lands when sent again
            else:
                answer.rejected[i] = record_error(errors)
        return answer

    def classify(self, response: httpx.Response) -> Answer | None:
        """What a whole-request answer means; None for 2xx. Salesforce's errors are a list
        of {message, errorCode}."""
        if 200 <= response.status_code < 300:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        code, message = str(first.get("errorCode", "")), str(first.get("message", ""))
        text = f"HTTP {response.status_code}: {code}: {message}" if code else None
        status = response.status_code
        if code == "REQUEST_LIMIT_EXCEEDED":
            if "TotalRequests" in message:
                return Answer("stop", error=f"the org's daily API request limit is spent ({text})")
            return Answer("retry", error=text, retry_after=CONCURRENCY_WAIT_S)
        if status == 404 or (status == 400 and code == "INVALID_FIELD"):
            # The object, the external id field or a mapped field does not exist: no record
            # of this sync can land until the project or the org changes.
            return Answer("setup", error=f"{self.object}/{self.id_field}: {text}")
        answer = status_answer(response, parse_retry_after(response.headers.get("Retry-After")))
        if answer and text:
            answer.error = text
        return answer

    def deliver_bulk(self, records: Iterable[Record],
                     on_outcomes: Callable[[list[Outcome]], None], *, max_retries: int = 6,
                     timeout_s: float = 30.0) -> Report:
        """Deliver through Bulk API 2.0 jobs: same contract as delivery.deliver()."""
        return deliver_bulk(self, records, on_outcomes, max_retries=max_retries,
                            timeout_s=timeout_s)


def _passing(errors: list) -> bool:
    """A lock held elsewhere, also when a flow or trigger wraps it in its own error code."""
    found = [e for e in errors if isinstance(e, dict)]
    return bool(found) and all(e.get("statusCode") in TRANSIENT
                               or any(t in str(e.get("message", "")) for t in TRANSIENT)
                               for e in found)


def connect(name: str, config: SalesforceConfig) -> SalesforceDestination:
    token = resolve_secret(config.access_token, f"destinations.{name}.access_token")
    bulk = BulkSettings(threshold=config.bulk_threshold, poll_s=config.bulk_poll_s,
                        timeout_s=config.bulk_timeout_s)
    return SalesforceDestination(name, token or "", config.base_url or config.instance_url or "",
                                 config.api_version, config.max_concurrency, config.batch_size,
                                 bulk)

