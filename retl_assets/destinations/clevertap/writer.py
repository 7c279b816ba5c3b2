"""CleverTap: user profiles and events through the upload API, deletes through the
Delete User Profile API.

POST https://{region}.api.clevertap.com/1/upload with the account id and passcode in
headers, `{"d": [...]}` of at most 1,000 records, each identified by `identity` (or
objectId/FBID/GPID). There is no time-window limit, but at most 15 requests in flight per
account; the 16th is answered 429 "Too many concurrent requests" (no Retry-After), so the
client's concurrency stays within 15. Record failures come inside a 200: `{status,
processed, unprocessed: [{status, code, error, record}]}`, each echoing the record it
refused, which is how they are matched back to rows. Profile (and event property) keys are
at most 120 bytes and values at most 512. Every profile carries a `profileData` object and
every event an `evtData` object, `{}` when nothing is mapped into it: CleverTap's own Node
library refuses a record without one, and its README sends `evtData: {}` for an event
without properties.

Deletes: POST /1/delete/profiles.json (same headers) with `{"identity": [...]}` or
`{"guid": [...]}` (the CleverTap id, which the upload API calls objectId), never both, at
most 100 values a call. A third-party digest of CleverTap's limits page gives this API 3
requests in flight per account, so deletes keep to 3. The success body is not documented:
a 200 without `status: "fail"` counts as done. `mirror` deletes the identity retl wrote for
the row (kept from the upload's answer), so it only touches profiles it uploaded; `delete`
deletes the identity of each row that left the model.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque

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
    raise_for_status,
)
from retl_assets.destinations.clevertap.config import CleverTapConfig, missing_region
from retl_assets.errors import ProjectError, RefusedRequest
from retl_assets.mapping import Literal, Raw, Rules, Tree
from retl_assets.mapping.values import epoch_sql, sql_of
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID, KEYTEXT

BASE_URL = "https://{region}.api.clevertap.com"
ACTIONS = {"clevertap": ("profile", "event", MIRROR, "delete")}
MAX_RECORDS = 1000
MAX_CONCURRENT = 15  # requests in flight per account, over every client of the account
MAX_DELETE_VALUES = 100  # identities (or guids) per /1/delete/profiles.json call
DELETE_IN_FLIGHT = 3  # requests on the delete API at once, per account
# How a delete names a profile, by the identifier the sync matches on.
DELETE_KEYS = {"identity": "identity", "objectId": "guid"}
# CleverTap publishes no byte limit; 1,000 records of a few dozen properties fit easily.
REQUEST_BYTES = 8 * 1024 * 1024
KEY_BYTES, VALUE_BYTES = 120, 512
ID_FIELDS = ("identity", "objectId", "FBID", "GPID")
CONTAINER = {"profile": "profileData", "event": "evtData"}


class CleverTapDestination(JsonApi):
    def __init__(self, name: str, account_id: str, passcode: str, base_url: str | None = None,
                 region: str | None = None, max_concurrency: int | None = None,
                 batch_size: int | None = None):
        self.name = name
        if not base_url and not region:
            # No region is safe to guess: each account lives in one (config.py).
            raise ValueError(f"destinations.{name}: {missing_region()}")
        self.base_url = (base_url or BASE_URL.format(region=region)).rstrip("/")
        # The passcode lives only inside the headers; repr() never shows it.
        self._headers = {"X-CleverTap-Account-Id": account_id, "X-CleverTap-Passcode": passcode,
                         "Content-Type": "application/json; charset=utf-8"}
        self.capabilities = Capabilities(
            records_per_request=min(batch_size or MAX_RECORDS, MAX_RECORDS),
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=REQUEST_BYTES,
            # The limit is per account: leave room for other clients unless told otherwise,
            # and never go over it, whatever the project file says.
            max_concurrency=min(max_concurrency or 10, MAX_CONCURRENT),
            rate_limit=None,  # CleverTap limits concurrency only
            operation_batch={"delete": MAX_DELETE_VALUES},
            operation_concurrency={"delete": DELETE_IN_FLIGHT},
            default_retry_after_s=1.0,
        )

    def __repr__(self) -> str:
        return f"CleverTapDestination({self.name!r}, {self.base_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> CleverTapWriter:
        return CleverTapWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        # Get User Profile by id: read-only, and a profile that does not exist is fine.
        return client.build_request("GET", f"{self.base_url}/1/profile.json",
                                    params={"identity": "retl-connection-check"},
                                    headers=self._headers)

    def upload(self, client: httpx.AsyncClient, records: list[Record]) -> httpx.Request:
        return self.build(client, "POST", "/1/upload", json_batch(records, "d"))

    def delete(self, client: httpx.AsyncClient, key: str, values: list[str]) -> httpx.Request:
        return self.build(client, "POST", "/1/delete/profiles.json",
                          json.dumps({key: values}).encode())


class CleverTapWriter:
    def __init__(self, dest: CleverTapDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync
        if sync.action not in ACTIONS["clevertap"]:
            raise ProjectError(f"syncs.{sync_name}.action: clevertap offers profile, event, "
                               f"mirror and delete, not {sync.action!r}")
        match = sync.match or {}
        if len(match) > 1 or (match and next(iter(match)) not in ID_FIELDS):
            raise ProjectError(f"syncs.{sync_name}.match: give the one CleverTap identifier, "
                               f"e.g. {{identity: user_id}} ({', '.join(ID_FIELDS)})")
        self.id_field, self.id_column = next(iter(match.items()), ("identity", None))
        if sync.action in (MIRROR, "delete") and self.id_field not in DELETE_KEYS:
            raise ProjectError(f"syncs.{sync_name}.match: CleverTap deletes profiles by "
                               f"identity or objectId only, not {self.id_field}")
        self.delete_key = DELETE_KEYS.get(self.id_field, "identity")
        if sync.action == "event" and self.id_column is None and sync.mapping is not None \
                and not set(ID_FIELDS) & set(sync.mapping):
            raise ProjectError(f"syncs.{sync_name}: an event sync needs the person of each "
                               f"event: match: {{identity: <column>}}")

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "profile", "updated": "profile", "deleted": "delete"}
        if self._sync.action == "delete":
            return {"deleted": "delete"}
        return {change: self._sync.action for change in self._sync.selects
                if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        if operation == "delete":  # the payload is the identifier alone
            return Rules(top_level=frozenset(DELETE_KEYS.values()), container=None,
                         as_string=frozenset(DELETE_KEYS.values()))
        top = {"type", "ts", CONTAINER[operation], *ID_FIELDS}
        if operation == "event":
            top.add("evtName")
        return Rules(top_level=frozenset(top), container=CONTAINER[operation],
                     as_string=frozenset({"identity", "objectId", "evtName"}))

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "delete":
            return {(self.delete_key,): self._delete_value()}
        tree: Tree = {("type",): Literal(operation)}
        if self.id_column is not None:
            tree[(self.id_field,)] = Raw(f"CAST({quote(self.id_column)} AS VARCHAR)")
        elif operation == "profile" and not any((f,) in mapped for f in ID_FIELDS):
            tree[("identity",)] = Raw(KEYTEXT)  # a profile's default identity: the primary key
        for path, expr in mapped.items():
            if path == ("ts",):
                expr = Raw(epoch_sql(sql_of(expr), "s"))  # UNIX epoch seconds
            tree.setdefault(path, expr)
        container = CONTAINER[operation]
        if not any(path[0] == container for path in tree):
            tree[(container,)] = Raw("json_object()")  # {}: the record's structure needs it
        return tree

    def _delete_value(self) -> Raw:
        if self._sync.action == MIRROR:
            return Raw(DEST_ID)  # the identifier this sync uploaded the profile with
        if self.id_column is not None:  # a deleted row keeps the columns it had
            return Raw(f"CAST({quote(self.id_column)} AS VARCHAR)")
        return Raw(KEYTEXT)

    def needs_dest_id(self, operation: str) -> bool:
        # A mirror deletes only the profiles it uploaded; a delete sync uploads nothing, so
        # it names the profiles of the rows that left the model.
        return operation == "delete" and self._sync.action == MIRROR

    def invalid_sql(self, operation: str, payload: str) -> str:
        def missing(field: str) -> str:
            return blank(payload, f"$.{field}")

        if operation == "delete":
            column = self.id_column or "the primary key"
            return first_problem([(missing(self.delete_key),
                                   f"'no {self.id_field} to delete (from {column})'")])

        data = CONTAINER[operation]
        column = self.id_column or ("the primary key" if operation == "profile" else None)
        checks = [(" AND ".join(missing(f) for f in ID_FIELDS),
                   f"'no {self.id_field}" + (f" (from {column})'" if column else
                                             " (set match: {identity: <column>})'"))]
        if operation == "event":
            checks += [(missing("evtName"), "'no evtName (map a column to evtName)'"),
                       (f"json_extract({payload}, '$.ts') IS NULL",
                        "'an event needs ts (map its timestamp column to ts)'")]
        checks += [
            ((f"json_extract({payload}, '$.ts') IS NOT NULL AND "
             f"json_type({payload}, '$.ts') NOT IN ('BIGINT', 'UBIGINT')"),
             "'ts is not a timestamp'"),
            ((f"list_max(list_transform(json_keys({payload}, '$.{data}'), "
             f"lambda k: strlen(k))) > {KEY_BYTES}"),
             f"'a {data} key is longer than {KEY_BYTES} bytes'"),
            ((f"list_max(list_transform(json_extract_string({payload}, '$.{data}.*'), "
             f"lambda v: strlen(v))) > {VALUE_BYTES}"),
             f"'a {data} value is longer than {VALUE_BYTES} bytes'"),
        ]
        return first_problem(checks)

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        if operation == "delete":  # at most 100 values (operation_batch)
            return self._dest.delete(client, self.delete_key, self._values(records))
        return self._dest.upload(client, records)

    def _values(self, records: list[Record]) -> list[str]:
        return [str(json.loads(r.payload)[self.delete_key]) for r in records]

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        raise_for_status(response)
        body = json_body(response)
        unprocessed = body.get("unprocessed") or []
        if body.get("status") == "fail" and not unprocessed:
            raise RefusedRequest(f"CleverTap: {body.get('error') or body}",
                                 status=response.status_code)
        if operation == "delete":
            return self._delete_failures(unprocessed, records)
        answer = self._failures(unprocessed, records)
        if isinstance(body.get("processed"), int):
            answer.counted = body["processed"]
        if operation == "profile":
            # CleverTap returns no id of its own: the identifier is what a delete names.
            for i, r in enumerate(records):
                value = json.loads(r.payload).get(self.id_field)
                if i not in answer.rejected and value not in (None, ""):
                    answer.ids[i] = str(value)
        return answer

    def _delete_failures(self, unprocessed: list, records: list[Record]) -> Answer:
        """The delete answer's body is not documented; should it name values it could not
        delete (as strings, or entries carrying the value), those rows are rejected."""
        position: dict[str, list[int]] = defaultdict(list)
        for i, value in enumerate(self._values(records)):
            position[value].append(i)
        answer = Answer()
        for entry in unprocessed:
            if isinstance(entry, dict):
                value = entry.get(self.delete_key, entry.get("record"))
                message = f"{entry.get('code')}: {entry.get('error')}"
            else:
                value, message = entry, "not deleted"
            found = position.get(str(value)) if isinstance(value, (str, int)) else None
            if not found:
                if len(records) == 1:
                    return Answer(rejected={0: message})
                raise RefusedRequest(f"CleverTap did not delete a profile it did not name: "
                                     f"{message}")
            for i in found:
                answer.rejected[i] = message
        return answer

    def _failures(self, unprocessed: list, records: list[Record]) -> Answer:
        """Each unprocessed entry echoes its record: find the row it came from."""
        sent = [json.loads(r.payload) for r in records]
        exact: dict[str, deque[int]] = defaultdict(deque)
        loose: dict[tuple, deque[int]] = defaultdict(deque)
        for i, record in enumerate(sent):
            exact[_canonical(record)].append(i)
            loose[_identity(record)].append(i)
        answer = Answer()
        lost = []
        for entry in unprocessed:
            echoed = entry.get("record") if isinstance(entry, dict) else None
            message = (f"{entry.get('code')}: {entry.get('error')}" if isinstance(entry, dict)
                       else str(entry))
            index = None
            if isinstance(echoed, dict):
                for queue in (exact.get(_canonical(echoed)), loose.get(_identity(echoed))):
                    while queue and index is None:
                        candidate = queue.popleft()
                        if candidate not in answer.rejected:
                            index = candidate
                    if index is not None:
                        break
            if index is None:
                lost.append(message)
            else:
                answer.rejected[index] = message
        if lost:
            if len(records) == 1:
                return Answer(rejected={0: lost[0]})
            # A failure we cannot place: halve the batch until each one is alone.
            raise RefusedRequest(f"CleverTap refused a record it did not echo: {lost[0]}")
        return answer


def _canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _identity(record: dict) -> tuple:
    return (record.get("type"), *(str(record.get(f)) for f in ID_FIELDS), record.get("evtName"))


def connect(name: str, config: CleverTapConfig) -> CleverTapDestination:
    passcode = resolve_secret(config.passcode, f"destinations.{name}.passcode")
    return CleverTapDestination(name, config.account_id, passcode or "", config.base_url,
                                config.region, config.max_concurrency, config.batch_size)
