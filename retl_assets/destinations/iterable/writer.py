"""Iterable: users by `POST /api/users/bulkUpdate`, events by `POST /api/events/trackBulk`,
deletes one user a request (`DELETE /api/users/{email}` or `/api/users/byUserId/{userId}`).

Header `Api-Key`. Each user or event carries the identifier the sync matches on at the top;
a mapped other identifier goes in `dataFields` (how Iterable documents setting a userId in an
email-based project), always as a string. A sync matched by userId sends `preferUserId: true`
on bulkUpdate: in an email-based project that is the only way a userId creates a user (with a
placeholder email), and other project types ignore it. bulkUpdate takes
up to 1,000 users and 4 MB at 5 requests/s per project; trackBulk takes up to 8,000 events at
10 requests/s; the deletes allow 100 requests/s. Both bulk calls answer 200 with counts and
`failedUpdates` (invalidEmails, invalidDataUserIds, ... lists of the identifiers that failed),
so failures are per item, mapped back by the value of the identifier their key names
(top level or dataFields; a malformed dataFields.userId is listed in invalidUserIds even when
the sync matches by email); a malformed request is a 400 `{msg, code, params}`. An event's `id`
is an upsert key, so retl sends its idempotency key there and a resent event is not doubled.
"""

from __future__ import annotations

import json
from urllib.parse import quote as quote_path

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    JsonApi,
    Record,
    blank,
    first_problem,
    json_batch,
    json_body,
    one_identifier,
    raise_for_status,
)
from retl_assets.destinations.iterable.config import IterableConfig
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.mapping import Column, Literal, Raw, Rules, Tree
from retl_assets.mapping.fields import Expr
from retl_assets.mapping.values import epoch_sql
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID, MSGID

BASE_URLS = {"us": "https://api.iterable.com", "eu": "https://api.eu.iterable.com"}
ACTIONS = {"iterable": ("upsert", "track", MIRROR)}
IDENTITIES = ("email", "userId")
OTHER = {"email": "userId", "userId": "email"}
KIND_OF = {"Emails": "email", "UserIds": "userId"}  # failedUpdates key suffix -> identifier
REQUEST_BYTES = 4 * 1024 * 1024  # bulkUpdate's published body limit; used for trackBulk too
# Per operation: records a request, and requests per second as Iterable publishes them.
LIMITS = {"bulkUpdate": (1000, 5), "trackBulk": (8000, 10), "delete": (1, 100)}
EVENT_ID_BYTES = 512
FAILURES = {  # failedUpdates keys -> what they mean
    "invalidEmails": "malformed email", "invalidUserIds": "malformed userId",
    "invalidDataEmails": "invalid dataFields", "invalidDataUserIds": "invalid dataFields",
    "conflictEmails": "identity conflicts with an existing user",
    "conflictUserIds": "identity conflicts with an existing user",
    "forgottenEmails": "user was GDPR-forgotten", "forgottenUserIds": "user was GDPR-forgotten",
    "notFoundEmails": "user not found", "notFoundUserIds": "user not found",
}


class IterableDestination(JsonApi):
    def __init__(self, name: str, api_key: str, base_url: str | None = None,
                 region: str = "us", max_concurrency: int | None = None,
                 batch_size: int | None = None):
        self.name = name
        self.base_url = (base_url or BASE_URLS[region]).rstrip("/")
        self._headers = {"Api-Key": api_key, "Content-Type": "application/json"}
        self.max_concurrency = max_concurrency or 4
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"IterableDestination({self.name!r}, {self.base_url!r})"

    def capabilities(self, operations: set[str]) -> Capabilities:
        # Each endpoint keeps its own batch size (deletes one user a request) and its own
        # published rate. No margin is needed for network jitter: the limiter holds each slot
        # until the answer is in, so the vendor's window never sees more than the limit.
        most = max(LIMITS[op][0] for op in operations)
        return Capabilities(
            records_per_request=min(self.batch_size or most, most),
            operation_batch={op: LIMITS[op][0] for op in operations},
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=REQUEST_BYTES,
            max_concurrency=self.max_concurrency,
            operation_limits={op: (LIMITS[op][1], 1.0) for op in operations},
            default_retry_after_s=1.0,  # Iterable documents no Retry-After
            deduplicates=operations == {"trackBulk"},
        )

    def writer(self, sync_name: str, sync: SyncConfig) -> IterableWriter:
        return IterableWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base_url}/api/channels",
                                    headers=self._headers)


class IterableWriter:
    def __init__(self, dest: IterableDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self._dest = dest
        self._sync = sync
        self.id_field, self.id_column = one_identifier(
            sync_name, sync, "Iterable", IDENTITIES,
            "{email: email_column} or {userId: user_id_column}")
        self.capabilities = dest.capabilities(set(self.operations().values()))

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "bulkUpdate", "updated": "bulkUpdate", "deleted": "delete"}
        op = "trackBulk" if self._sync.action == "track" else "bulkUpdate"
        return {change: op for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        # Only the matched identifier stays on top (Iterable wants email or userId, not
        # both); every other field, the other identifier too, goes in dataFields.
        top = {self.id_field}
        if operation == "trackBulk":
            top |= {"eventName", "id", "createdAt", "campaignId", "templateId"}
        else:
            top |= {"preferUserId", "mergeNestedObjects"}
        return Rules(top_level=frozenset(top), container="dataFields",
                     as_string=frozenset({"userId", "id"}))

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "delete":
            return {(self.id_field,): Raw(DEST_ID)}
        tree = {p: e for p, e in mapped.items() if p != (self.id_field,)}
        tree[(self.id_field,)] = Raw(f"CAST({quote(self.id_column)} AS VARCHAR)")
        # Iterable's email and userId are strings; an integer id column must not go out as
        # a number in dataFields (as_string covers only the top level).
        for path in (("dataFields", OTHER[self.id_field]), ("dataFields", self.id_field)):
            if path in tree:
                tree[path] = _as_string(tree[path])
        if operation == "bulkUpdate" and self.id_field == "userId":
            # "If only userId is passed ... and there is no matching user, Iterable returns
            # an error" in an email-based project unless preferUserId is true; the other
            # project types ignore it. Map preferUserId to {value: false} to turn it off.
            tree.setdefault(("preferUserId",), Literal(True))
        if operation == "trackBulk":
            tree.setdefault(("id",), Raw(MSGID))
            created = tree.get(("createdAt",))
            if isinstance(created, Column):
                tree[("createdAt",)] = Raw(epoch_sql(quote(created.name), "s"))
        return tree

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "delete"

    def sent_id(self, operation: str) -> str | None:
        # Iterable returns no id of its own: the identifier is what a delete uses.
        return f"CAST({quote(self.id_column)} AS VARCHAR)" if operation == "bulkUpdate" else None

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == "delete":
            return "NULL"

        def missing(field: str) -> str:
            return blank(payload, f"$.{field}")

        checks = [(missing(self.id_field), (f"'no value for the match field {self.id_field} "
                                            f"(column {self.id_column})'"))]
        if operation == "trackBulk":
            checks += [
                (missing("eventName"), "'an event needs eventName'"),
                ((f"strlen(coalesce(json_extract_string({payload}, '$.id'), '')) "
                  f"> {EVENT_ID_BYTES}"), f"'event id over {EVENT_ID_BYTES} bytes'"),
            ]
        checks.append((f"strlen({payload}) > {REQUEST_BYTES // 2}",
                       "'record is over 2 MB, half of the 4 MB request limit'"))
        return first_problem(checks)

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        if operation == "delete":  # one user a request (operation_batch)
            value = str(json.loads(records[0].payload)[self.id_field])
            where = "/api/users/" if self.id_field == "email" else "/api/users/byUserId/"
            return self._dest.build(client, "DELETE", where + quote_path(value, safe=""))
        array = "users" if operation == "bulkUpdate" else "events"
        path = "/api/users/bulkUpdate" if operation == "bulkUpdate" else "/api/events/trackBulk"
        return self._dest.build(client, "POST", path, json_batch(records, array))

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        if operation == "delete" and response.status_code == 404:
            return Answer()  # already gone
        raise_for_status(response, parse_retry_after(response.headers.get("Retry-After")))
        if operation == "delete":
            return Answer()
        return self._failures(json_body(response), operation, records)

    def _failures(self, body: dict, operation: str, records: list[Record]) -> Answer:
        # Failures name users by identifier, not by position: map them back to the records.
        # A key names the identifier it lists (invalidUserIds: userIds), which need not be
        # the one the sync matches on: a malformed userId in dataFields is listed there by
        # its own value while the sync matches by email. So both identifiers are indexed,
        # at the top level and in dataFields.
        values = [json.loads(r.payload) for r in records]
        position: dict[str, dict[str, list[int]]] = {kind: {} for kind in IDENTITIES}
        for i, v in enumerate(values):
            fields = v.get("dataFields") if isinstance(v.get("dataFields"), dict) else {}
            for kind in IDENTITIES:
                seen = {_norm(kind, x) for x in (v.get(kind), fields.get(kind))
                        if x not in (None, "")}
                for value in seen:
                    position[kind].setdefault(value, []).append(i)
        answer = Answer()
        lists = dict(body.get("failedUpdates") or {})
        for key in ("invalidEmails", "invalidUserIds"):  # the deprecated top-level twins
            lists.setdefault(key, body.get(key) or [])
        for key, failed in lists.items():
            kind = next((k for suffix, k in KIND_OF.items() if key.endswith(suffix)), None)
            if kind is None or not isinstance(failed, list):
                continue
            for value in failed:
                for i in position[kind].get(_norm(kind, value), []):
                    answer.rejected.setdefault(i, f"{key}: {FAILURES.get(key, 'failed')}")
        if isinstance(body.get("successCount"), int):
            answer.counted = body["successCount"]
        disallowed = set(body.get("disallowedEventNames") or [])
        for i, v in enumerate(values):
            if operation == "trackBulk" and v.get("eventName") in disallowed:
                answer.rejected.setdefault(i, f"disallowedEventNames: {v['eventName']!r} "
                                              f"is not allowed in this project")
        return answer


def _as_string(expr: Expr) -> Expr:
    """A mapped value as a JSON string (NULL stays null)."""
    if isinstance(expr, Column):
        return Raw(f"CAST({quote(expr.name)} AS VARCHAR)")
    if isinstance(expr, Literal) and expr.value is not None and not isinstance(expr.value, str):
        return Literal(str(expr.value))
    return expr  # a template renders text already


def _norm(kind: str, value: object) -> str:
    """How Iterable compares an identifier: emails without case, userIds exactly."""
    return str(value).lower() if kind == "email" else str(value)


def connect(name: str, config: IterableConfig) -> IterableDestination:
    key = resolve_secret(config.api_key, f"destinations.{name}.api_key")
    return IterableDestination(name, key or "", config.base_url, config.region,
                               config.max_concurrency, config.batch_size)
