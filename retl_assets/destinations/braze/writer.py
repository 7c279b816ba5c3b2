"""Braze REST API: user attributes and custom events by `/users/track`, deletes by
`/users/delete`.

Each instance has its own REST endpoint (https://rest.<instance>.braze.com). `/users/track`
takes at most 75 objects a request and 3,000 requests per 3 s per workspace; it answers 201
`{"message": "success", ...}` and names refused objects in `errors: [{type, input_array,
index}]` while the rest are processed (per item). When no object is valid it answers 400
`{"message": "Valid data must be provided in the 'attributes', 'events', or 'purchases'
fields.", "errors": [...]}` with the same per-index list (3rd-party captures; Braze does
not document the status): we reject the named objects there too, rather than halving a
request whose every object is already named. Any other 400 is fatal for the request.
`/users/delete` takes up to 50 ids of one kind and shares a 20,000 requests/minute limit.
Every answer carries X-RateLimit-Limit/-Remaining/-Reset (epoch seconds); a 429 carries no
documented Retry-After, so the client waits until the reset. Events are never deduplicated.

`action: update` sends attributes with `_update_existing_only: true` (Braze's "Update Only"
mode): Braze updates a user it has and creates none. Its answer counts objects queued, not
users found, so a row whose user Braze does not have is delivered like any other.
"""

from __future__ import annotations

import json
import time

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
from retl_assets.destinations.braze.config import BrazeConfig
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import AuthError, ProjectError
from retl_assets.mapping import Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID

UPDATE = "update"  # update-only: attributes in Braze's "Update Only" mode, no user created
ACTIONS = {"braze": ("upsert", UPDATE, "track", MIRROR)}
UPDATE_ONLY = "_update_existing_only"
MAX_OBJECTS = 75  # per /users/track request, attributes + events + purchases together
MAX_DELETE_IDS = 50  # per /users/delete request
TRACK_RATE = (3000, 3.0)  # /users/track, per workspace
DELETE_RATE = (20_000, 60.0)  # /users/delete, shared with the alias/identify/merge calls
REQUEST_BYTES = 4 * 1024 * 1024  # Braze publishes no body limit; a conservative guess
IDENTITIES = ("external_id", "email")  # what a sync may match users on
EVENT_TOP = frozenset({"external_id", "email", "user_alias", "braze_id", "phone", "name",
                       "time", "app_id", UPDATE_ONLY})
# The array of /users/track each operation fills; deletes go to /users/delete.
ARRAYS = {"attributes": "attributes", UPDATE: "attributes", "events": "events"}


class BrazeDestination(JsonApi):
    def __init__(self, name: str, api_key: str, base_url: str, max_concurrency: int | None = None,
                 batch_size: int | None = None):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.max_concurrency = max_concurrency or 4
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"BrazeDestination({self.name!r}, {self.base_url!r})"

    def capabilities(self) -> Capabilities:
        # /users/track takes 75 objects a request, /users/delete 50 ids. A hair over each
        # vendor window so network jitter never tips us over.
        track = (TRACK_RATE[0], TRACK_RATE[1] + 0.1)
        return Capabilities(
            records_per_request=min(self.batch_size or MAX_OBJECTS, MAX_OBJECTS),
            operation_batch={"delete": MAX_DELETE_IDS},
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=REQUEST_BYTES,
            max_concurrency=self.max_concurrency,
            operation_limits={"attributes": track, UPDATE: track, "events": track,
                              "delete": (DELETE_RATE[0], DELETE_RATE[1] + 0.5)},
            default_retry_after_s=3.0,
            deduplicates=False,
        )

    def writer(self, sync_name: str, sync: SyncConfig) -> BrazeWriter:
        return BrazeWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        # Braze has no read call a users.track key may make. Updating a user that does not
        # exist with _update_existing_only creates nothing, and checks the key and permission.
        body = {"attributes": [{"external_id": "retl-connection-check",
                                "_update_existing_only": True}]}
        return client.build_request("POST", f"{self.base_url}/users/track", json=body,
                                    headers=self._headers)


class BrazeWriter:
    def __init__(self, dest: BrazeDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self._dest = dest
        self._sync = sync
        self.id_field, self.id_column = one_identifier(
            sync_name, sync, "Braze", IDENTITIES,
            "e.g. {external_id: user_id_column} or {email: email_column}")
        if sync.action == UPDATE:
            _check_update(sync_name, sync)
        self.capabilities = dest.capabilities()

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "attributes", "updated": "attributes", "deleted": "delete"}
        if self._sync.action == UPDATE:
            # added_or_updated unless `records:` narrows it; deleted is refused at start.
            return {change: UPDATE for change in self._sync.selects}
        op = "events" if self._sync.action == "track" else "attributes"
        return {change: op for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        if operation == "events":
            return Rules(top_level=EVENT_TOP, container="properties",
                         as_string=frozenset({"external_id"}))
        # Attributes sit flat on the user object, beside its identifier.
        return Rules(top_level=frozenset(), container=None)

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "delete":
            return {(self.id_field,): Raw(DEST_ID)}
        identity = Raw(f"CAST({quote(self.id_column)} AS VARCHAR)")
        tree = {**{p: e for p, e in mapped.items() if p != (self.id_field,)},
                (self.id_field,): identity}
        if operation == UPDATE:
            tree[(UPDATE_ONLY,)] = Literal(True)
        return tree

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "delete"

    def sent_id(self, operation: str) -> str | None:
        # Braze returns no id of its own: the identifier retl wrote is what a delete uses.
        if operation in ("attributes", UPDATE):
            return f"CAST({quote(self.id_column)} AS VARCHAR)"
        return None

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == "delete":
            return "NULL"

        def missing(field: str) -> str:
            return blank(payload, f"$.{field}")

        checks = [(missing(self.id_field), f"'no value for the match field {self.id_field} "
                                           f"(column {self.id_column})'")]
        if operation == "events":
            checks += [(missing("name"), "'an event needs name'"),
                       (missing("time"), "'an event needs time'")]
        return first_problem(checks)

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        if operation == "delete":
            ids = [json.loads(r.payload)[self.id_field] for r in records]
            if self.id_field == "email":
                # Braze deletes nothing when several users share the email and nothing
                # says which: retl created email-only (unidentified) users.
                body = {"email_addresses": [
                    {"email": e, "prioritization": ["unidentified", "most_recently_updated"]}
                    for e in ids]}
            else:
                body = {"external_ids": ids}
            return self._dest.build(client, "POST", "/users/delete", json.dumps(body).encode())
        array = ARRAYS[operation]
        return self._dest.build(client, "POST", "/users/track", json_batch(records, array))

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        status = response.status_code
        if status == 404:
            # Braze answers 404 for a REST key it does not know.
            raise AuthError(f"HTTP 404 (unknown REST API key): {response.text[:200]}")
        if status == 400 and operation != "delete":
            named = _item_errors(json_body(response), ARRAYS[operation], len(records))
            if len(named.rejected) == len(records):
                # No object was valid, and Braze names each: reject them here, one request.
                return named
        raise_for_status(response, _wait(response) if status == 429 else None)
        if operation == "delete":
            return Answer()
        # 202 {"message": "queued"} during maintenance: accepted, processed later.
        return _item_errors(json_body(response), ARRAYS[operation], len(records))


def _check_update(sync_name: str, sync: SyncConfig) -> None:
    """What an update-only sync cannot ask Braze for; raised before anything is sent."""
    if sync.records == "deleted":
        raise ProjectError(f"syncs.{sync_name}.records: a Braze `update` sync updates users from "
                           "added or updated rows; Braze has no update-only delete (use "
                           "`mirror` to delete users)")
    if UPDATE_ONLY in (sync.mapping or {}):
        raise ProjectError(f"syncs.{sync_name}.mapping.{UPDATE_ONLY}: a Braze `update` sync "
                           "always sends it as true (Update Only mode); leave it out")


def _item_errors(body: dict, array: str, n: int) -> Answer:
    """`errors: [{type, input_array, index}]`: index in the batch -> why Braze refused it;
    an error naming no object of the batch is kept as unplaced."""
    answer = Answer()
    for error in body.get("errors") or []:
        message = str(error.get("type") if isinstance(error, dict) else error) \
            or "refused by Braze"
        index = error.get("index") if isinstance(error, dict) else None
        if (isinstance(error, dict) and error.get("input_array") == array
                and isinstance(index, int) and 0 <= index < n):
            answer.rejected.setdefault(index, message)
        else:
            answer.unplaced.append(message)
    return answer


def _wait(response: httpx.Response) -> float | None:
    """Seconds until the rate window resets: Retry-After if sent, else X-RateLimit-Reset."""
    after = parse_retry_after(response.headers.get("Retry-After"))
    if after is not None:
        return after
    try:
        reset = float(response.headers.get("X-RateLimit-Reset", ""))
    except ValueError:
        return None
    return min(max(reset - time.time(), 0.05), 60.0)


def connect(name: str, config: BrazeConfig) -> BrazeDestination:
    key = resolve_secret(config.api_key, f"destinations.{name}.api_key")
    base_url = config.base_url or f"https://rest.{config.instance}.braze.com"
    return BrazeDestination(name, key or "", base_url, config.max_concurrency,
                            config.batch_size)
