"""Salesforce: upsert by an external id on any object, delete by Salesforce's own id.

Small changesets go through sObject Collections: `PATCH .../composite/sobjects/{SObject}/
{ExternalIdField}` with at most 200 records, answered 200 with one result per record in
request order (allOrNone false, so good records land beside bad ones), and `DELETE
.../composite/sobjects?ids=` with the ids retl kept from the upserts. A run with more than
`bulk_threshold` records of one operation sends them by its bulk form instead
(`bulk_operation`): Bulk API 2.0 ingest jobs, each a batch the engine hands to `job`
(bulk.py), its requests sent through the engine like every other.

Salesforce publishes no per-second limit: an org has a daily allocation of API requests
(403 REQUEST_LIMIT_EXCEEDED "TotalRequests", which stops the run with rows kept owed) and a
cap on long-running concurrent requests (the same code, "Concurrent...": wait and retry).
"""

from __future__ import annotations

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    Exchange,
    Record,
    blank,
    first_problem,
    json_batch,
)
from retl_assets.destinations.salesforce.answers import (
    CONCURRENCY_WAIT_S,
    GONE,
    check,
    codes,
    error_code,
    record_error,
)
from retl_assets.destinations.salesforce.bulk import BULK_FORMS, BulkJobs, BulkSettings, verb
from retl_assets.destinations.salesforce.config import API_VERSION, SalesforceConfig
from retl_assets.errors import ProjectError, RetryableAnswer
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
            rate_limit=None,  # a daily allocation, not a window: see `check`
            default_retry_after_s=CONCURRENCY_WAIT_S,
            answers="results",  # one result per record (by external id in bulk results)
            # A bulk job takes far more than a collections request.
            operation_size={op: (self.bulk.records_per_job, self.bulk.bytes_per_job)
                            for op in BULK_FORMS.values()},
        )

    def __repr__(self) -> str:
        return f"SalesforceDestination({self.name!r}, {self.instance_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> SalesforceWriter:
        return SalesforceWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base}/limits", headers=self.headers)

    def check_answer(self, response: httpx.Response) -> tuple[bool, str] | None:
        if response.status_code == 403 and error_code(response)[0] == "REQUEST_LIMIT_EXCEEDED":
            return False, ("the token is good, but the org's API request limit is spent "
                           "(REQUEST_LIMIT_EXCEEDED); syncs wait until it frees up")
        if response.status_code == 404:
            return False, (f"no REST API at {self.base} (check instance_url and api_version)")
        return None


class SalesforceWriter:
    jobs = frozenset(BULK_FORMS.values())  # the bulk forms: one Bulk API 2.0 job a batch

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
        self._bulk = BulkJobs(dest.base, dest.headers, self.object, self.id_field, dest.bulk,
                              self.check)

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "delete"}
        if self._sync.action == "delete":
            return {"deleted": "delete"}
        return {change: "upsert" for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        return Rules(top_level=frozenset(), container=None)  # fields sit on the record

    def bulk_operation(self, operation: str) -> str:
        """The operation that carries `operation`'s records as Bulk API 2.0 jobs."""
        return BULK_FORMS[operation]

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if verb(operation) == "delete":
            return {("id",): Raw(DEST_ID)}
        return {("attributes", "type"): Literal(self.object), **mapped,
                (self.id_field,): Raw(f"CAST({quote(self.id_column)} AS VARCHAR)")}

    def needs_dest_id(self, operation: str) -> bool:
        return verb(operation) == "delete"

    def invalid_sql(self, operation: str, payload: str) -> str:
        if verb(operation) == "delete":
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
        self.check(response)
        try:
            results = response.json()
        except ValueError:
            results = None
        if not isinstance(results, list) or len(results) != len(records):
            raise RetryableAnswer(f"Salesforce answered {len(records)} records with "
                                  f"{response.text[:200]!r}", status=response.status_code)
        answer = Answer()
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

    def check(self, response: httpx.Response) -> None:
        """Raise what a whole-request answer means; nothing for 2xx."""
        check(response, f"{self.object}/{self.id_field}")

    async def job(self, call: Exchange, operation: str, records: list[Record]) -> Answer:
        """A bulk form's batch, delivered as one Bulk API 2.0 job (bulk.py)."""
        return await self._bulk.run(call, operation, records)


def _passing(errors: list) -> bool:
    """A lock held elsewhere, also when a flow or trigger wraps it in its own error code."""
    found = [e for e in errors if isinstance(e, dict)]
    return bool(found) and all(codes(e) & TRANSIENT for e in found)


def connect(name: str, config: SalesforceConfig) -> SalesforceDestination:
    token = resolve_secret(config.access_token, f"destinations.{name}.access_token")
    bulk = BulkSettings(threshold=config.bulk_threshold, poll_s=config.bulk_poll_s,
                        timeout_s=config.bulk_timeout_s)
    return SalesforceDestination(name, token or "", config.base_url or config.instance_url or "",
                                 config.api_version, config.max_concurrency, config.batch_size,
                                 bulk)

