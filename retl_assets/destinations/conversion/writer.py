"""Conversion (conversion.ai): contacts, events and custom objects, on its v2 API.

    POST {base}/v2/contacts/batch   {"contacts": [{email, userId, fields, companyFields}]}
         -> 200 {"data": {"results": [{success, cnvContactId, contactCreated}]}}, 1-1,000
    POST {base}/v2/events/batch     {"events": [{userId | email, event, timestamp, eventId,
                                                 data}]}, 1-200
         -> 200 {"data": {processed, tracked, failed, "results": [{success, cnvEventId,
                                                                    cnvContactId}]}}
    POST {base}/v2/objects/{type}/batch   (UNVERIFIED, see OBJECTS_PATH)
    DELETE {base}/v1/contacts/by-email/{email}
    X-API-Key: sk_live_...

A contact is matched by userId first, then by email; only an email creates one. Events and
objects never create contacts. An event's name is `event` (required), its `timestamp` ISO
8601 (default: now), its properties `data`; a repeated eventId updates the event in place,
so resending one is harmless. Each item of a batch is processed on its own and answered in
its own result, in request order (a partial failure does not fail the request); a 400
refuses a request whole (the engine halves it to find the bad item). Sources:
docs.conversion.ai/api-reference/batch-track-events, .../track-event and
.../batch-upsert-contacts (docs/vendor-contracts.md section 8); what is still UNVERIFIED
is marked here too. Conversion publishes 10 requests a second for v1 and nothing for v2:
we keep to 10 (a project's `rate_limit: "N/S"` replaces it).
"""

from __future__ import annotations

import json
from urllib.parse import quote as quote_url

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    JsonApi,
    Record,
    first_problem,
    json_batch,
    json_body,
    raise_for_status,
)
from retl_assets.destinations.conversion.config import ConversionConfig
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import ProjectError, RetryableAnswer
from retl_assets.mapping import Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import MSGID

BASE_URL = "https://pub-api.conversion.ai/api"
ACTIONS = {"conversion": ("upsert", "event", "object", MIRROR)}
CONTACTS_PATH = "/v2/contacts/batch"
# docs.conversion.ai "Batch track events": 1-200 events, `event` names each one.
EVENTS_PATH = "/v2/events/batch"
# UNVERIFIED, OUR DESIGN: no custom-object endpoint was found. This one follows the v2
# contacts batch: {"objects": [{id, userId | email, fields, relationshipFields}]} answered
# {"data": {"results": [{success, cnvObjectId, objectCreated}]}}. Check it before use.
OBJECTS_PATH = "/v2/objects/{type}/batch"
DELETE_PATH = "/v1/contacts/by-email/{email}"  # v1; no v2 delete was found
LIMITS = {"upsert": 1000, "event": 200, "object": 200}  # object: our choice (UNVERIFIED)
REQUEST_BYTES = 4 * 1024 * 1024  # unpublished: our conservative choice
DEFAULT_RATE = (10, 1.0)  # v1's published limit; v2's (and its 429) are UNVERIFIED
IDENTITY = ("userId", "email")


class ConversionDestination(JsonApi):
    def __init__(self, name: str, api_key: str, base_url: str | None = None,
                 max_concurrency: int | None = None, batch_size: int | None = None):
        self.name = name
        self.base_url = (base_url or BASE_URL).rstrip("/")
        self.max_concurrency = max_concurrency or 4
        self.batch_size = batch_size
        self._headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    def __repr__(self) -> str:
        return f"ConversionDestination({self.name!r}, {self.base_url!r})"

    def capabilities(self, action: str) -> Capabilities:
        most = LIMITS["upsert" if action == MIRROR else action]
        return Capabilities(
            records_per_request=min(self.batch_size or most, most),
            operation_batch={"delete": 1},  # DELETE /v1/contacts/by-email/{email}
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=REQUEST_BYTES,
            max_concurrency=self.max_concurrency,
            rate_limit=DEFAULT_RATE,
            default_retry_after_s=1.0,  # no Retry-After is documented
            deduplicates=action == "event",  # a repeated eventId updates in place
            answers="results",  # data.results[i] per item; a delete answers as a whole
            operation_answers={"delete": "whole"},
        )

    def writer(self, sync_name: str, sync: SyncConfig) -> ConversionWriter:
        return ConversionWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        # A read-only call that answers 2xx for a good key: one contact of the export API
        # (3rd-party source: the Fivetran connector; vendor-contracts section 8).
        return client.build_request("POST", f"{self.base_url}/v2/exports/contacts",
                                    json={"limit": 1}, headers=self._headers)


class ConversionWriter:
    def __init__(self, dest: ConversionDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities(sync.action)
        self._dest = dest
        self._sync = sync
        where = f"syncs.{sync_name}"
        self.action = sync.action
        match = dict(sync.match or {"email": "email"})
        allowed = ("id", *IDENTITY) if self.action == "object" else IDENTITY
        unknown = sorted(set(match) - set(allowed))
        if unknown:
            raise ProjectError(f"{where}.match: Conversion matches by {' and '.join(allowed)}, "
                               f"not {', '.join(unknown)}")
        self.id_column = match.pop("id", None)
        self.identity = match  # userId and/or email -> column
        if not self.identity:
            raise ProjectError(f"{where}.match: give userId and/or email (model columns) to "
                               f"find the contact by")
        self.object = sync.object
        if self.action == "object" and not (self.object and self.id_column):
            raise ProjectError(f"{where}: a Conversion object sync needs `object` (the custom "
                               f"object type) and match.id (the column of the object's id)")
        if self.action == MIRROR and "email" not in self.identity:
            raise ProjectError(f"{where}.match: a mirror deletes contacts by email; "
                               f"give match.email")

    def operations(self) -> dict[str, str]:
        if self.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "delete"}
        return {change: self.action for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        ids = frozenset({*IDENTITY, "id", "eventId"})  # sent as text whatever the column
        if operation == "event":
            return Rules(top_level=frozenset({*IDENTITY, "event", "timestamp", "eventId",
                                              "data"}), container="data", as_string=ids)
        if operation == "object":
            return Rules(top_level=frozenset({*IDENTITY, "id", "fields", "relationshipFields"}),
                         container="fields", as_string=ids)
        return Rules(top_level=frozenset({*IDENTITY, "fields", "companyFields",
                                          "subscriptionStatus"}), container="fields",
                     as_string=ids)

    def payload(self, operation: str, mapped: Tree) -> Tree:
        ids = {(name,): _text(column) for name, column in self.identity.items()}
        if operation == "delete":
            return {("email",): ids[("email",)]}
        tree = {**mapped, **ids}
        if operation == "event":
            tree.setdefault(("eventId",), Raw(MSGID))  # a resend updates, never duplicates
        if operation == "object":
            tree[("id",)] = _text(self.id_column or "")
        return tree

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "delete"  # delete only contacts this sync created or updated

    def invalid_sql(self, operation: str, payload: str) -> str:
        def missing(field: str) -> str:
            return f"coalesce(trim(json_extract_string({payload}, '$.{field}')), '') = ''"

        if operation == "delete":
            checks = [(missing("email"), "'a contact is deleted by email, and this one has none'")]
        else:
            checks = [(f"{missing('userId')} AND {missing('email')}",
                       "'needs userId or email to find the contact'")]
        if operation == "event":
            checks.append((missing("event"), "'an event needs event (its name): map a column "
                                             "to event'"))
        if operation == "object":
            checks.insert(0, (missing("id"), f"'no object id (column {self.id_column})'"))
        return first_problem(checks)

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        if operation == "delete":
            [record] = records  # operation_batch: one delete a request
            email = quote_url(json.loads(record.payload)["email"], safe="@")
            return self._dest.build(client, "DELETE", DELETE_PATH.format(email=email))
        key, path = {"upsert": ("contacts", CONTACTS_PATH), "event": ("events", EVENTS_PATH),
                     "object": ("objects", OBJECTS_PATH.format(type=self.object))}[operation]
        return self._dest.build(client, "POST", path, json_batch(records, key))

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        status = response.status_code
        if operation == "delete" and status == 404:
            return Answer()  # no such contact: what a delete wants
        if not response.is_success:
            raise_for_status(response, parse_retry_after(response.headers.get("Retry-After")),
                             f"HTTP {status}: {_message(response)}")
        if operation == "delete":
            return Answer()
        ids = {"event": "cnvEventId", "object": "cnvObjectId"}.get(operation, "cnvContactId")
        return _results(json_body(response), len(records), ids)


def _text(column: str) -> Raw:
    return Raw(f"CAST({quote(column)} AS VARCHAR)")


def _message(response: httpx.Response) -> str:
    message = json_body(response).get("message")
    return message if isinstance(message, str) else response.text[:300]


def _failure(item: dict) -> str:
    """A failed item's error. Conversion's examples show only successes, so the field's name
    is UNVERIFIED: read `error` (text, or {code, message}), `message` and `code`."""
    error, message, code = item.get("error"), item.get("message"), item.get("code")
    if isinstance(error, dict):
        code = error.get("code") or code
        message = error.get("message") or message
        error = None
    parts = dict.fromkeys(str(x) for x in (error, code, message) if x)  # no repeats
    return ": ".join(parts) or "failed"


def _results(body: dict, n: int, id_field: str) -> Answer:
    """{data: {results: [...]}}, one result per item in request order; an item failed when
    its `success` is false."""
    results = (body.get("data") or {}).get("results")
    if not isinstance(results, list) or len(results) != n:
        # An answer we cannot pair with the items: retrying is safe (upserts), guessing not.
        raise RetryableAnswer(f"answer has {len(results or [])} results for {n} items")
    answer = Answer()
    for i, result in enumerate(results):
        if not isinstance(result, dict) or not result.get("success"):
            answer.rejected[i] = _failure(result if isinstance(result, dict) else {})
            continue
        answer.confirmed.add(i)
        if result.get(id_field):
            answer.ids[i] = str(result[id_field])
    return answer


def connect(name: str, config: ConversionConfig) -> ConversionDestination:
    key = resolve_secret(config.api_key, f"destinations.{name}.api_key")
    return ConversionDestination(name, key or "", config.base_url, config.max_concurrency,
                                 config.batch_size)
