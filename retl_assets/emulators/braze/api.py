"""Local emulator of Braze's `/users/track` and `/users/delete`, enforcing the contract in
docs/vendor-contracts.md section 3.

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503; faults.latency_ms; 2. `Authorization: Bearer <REST key>` else 401;
3. the endpoint's rate window (/users/track 3,000 per 3 s, /users/delete 20,000 per minute)
   -> 429 with X-RateLimit-Limit/-Remaining/-Reset (epoch seconds) and no Retry-After, which
   Braze does not document; every answer carries the three headers; 4. injected 429s, 500s;
5. the endpoint. /users/track refuses a malformed request or more than 75 objects with a
   fatal 400 `{message, errors}`; otherwise each object is checked alone, the bad ones are
   listed in `errors: [{type, input_array, index}]` and the rest are applied (201
   `{"message": "success", "attributes_processed", "events_processed", "errors"?}`). When
   no object is valid the answer is 400 `{"message": "Valid data must be provided in the
   'attributes', 'events', or 'purchases' fields.", "errors": [...]}` with the same list
   (3rd-party captures show it; the status is Segment's mocks', Braze documents none).
   `faults.reject_invalid_batches` turns any per-object error into a fatal 400.
   An object with `_update_existing_only: true` ("Update Only" mode; the default for a
   user_alias) updates a user that exists and creates none; it is still counted in
   `*_processed` (Braze counts objects queued, before it looks for the user) and names no
   error. stats["skipped"] counts the objects that found no user and created none.
   /users/delete takes up to 50 ids of one kind and answers 201 `{"deleted": n}`.

State lives in memory; `state()`, `users()`, `records()` and GET /_emulator/state show it.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from retl_assets.emulators.common import (
    BaseEmulator,
    Faults,
    RateWindow,
    Refused,
    Reply,
    base_stats,
    emulator_app,
)

MAX_OBJECTS = 75
MAX_DELETE_IDS = 50
ARRAYS = ("attributes", "events", "purchases")
IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
DELETE_KINDS = {"external_ids": "external_id", "user_aliases": "user_alias",
                "braze_ids": "braze_id", "email_addresses": "email", "phone_numbers": "phone"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NEEDS_ID = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
NO_VALID_DATA = ("Valid data must be provided in the 'attributes', 'events', or 'purchases' "
                 "fields.")


class BrazeEmulator(BaseEmulator):
    """An in-memory Braze workspace behind `build_braze_app`.

    api_keys: accepted REST keys; None or empty accepts any non-empty key.
    rate_limit: (requests, seconds) of /users/track; Braze publishes (3000, 3.0).
    delete_rate_limit: the same for /users/delete; Braze publishes (20000, 60.0).
    max_objects: objects per /users/track request (75; 50 on the newer MAU contracts).
    """

    def __init__(self, api_keys: set[str] | None = None, *,
                 rate_limit: tuple[int, float] = (3000, 3.0),
                 delete_rate_limit: tuple[int, float] = (20_000, 60.0),
                 max_objects: int = MAX_OBJECTS, faults: Faults | None = None,
                 seed: int = 0) -> None:
        super().__init__(faults, seed)
        self.api_keys = set(api_keys or ())
        self.max_objects = max_objects
        self._windows = {"/users/track": RateWindow(*rate_limit),
                         "/users/delete": RateWindow(*delete_rate_limit)}
        self._clear()

    def _clear(self) -> None:
        self._users: dict[str, dict[str, Any]] = {}  # braze_id -> profile
        # external_id never changes once set: an index keeps 20k-user syncs linear.
        self._by_external: dict[Any, dict[str, Any]] = {}
        self._next = 1
        self._tick = 0  # orders updates: "most recently updated" without clock ties
        for window in self._windows.values():
            window.clear()
        self.stats = {**base_stats(), "max_delete_requests_in_window": 0, "created": 0,
                      "updated": 0, "deleted": 0, "events": 0, "objects_refused": 0,
                      "skipped": 0,
                      "contract_violations": []}

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"users": copy.deepcopy(list(self._users.values())),
                    "stats": self.stats_copy()}

    def users(self) -> list[dict[str, Any]]:
        """Every profile: {braze_id, external_id, email, attributes, events, updated}."""
        with self._lock:
            return copy.deepcopy(list(self._users.values()))

    def records(self) -> dict[str, dict[str, Any]]:
        """{external_id (or email, for email-only users): attributes}."""
        with self._lock:
            return {u["external_id"] or u["email"]: copy.deepcopy(u["attributes"])
                    for u in self._users.values()}

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or (self.api_keys and key not in self.api_keys):
            raise Refused(401, {"message": "Invalid API key"})  # never echo the key
        window = self._windows[request.url.path]
        with self._lock:
            now = time.monotonic()
            wait = window.arrive(now)
            self.stats["max_requests_in_window"] = self._windows["/users/track"].max_seen
            self.stats["max_delete_requests_in_window"] = self._windows["/users/delete"].max_seen
            headers = _limit_headers(window, now, wait)
        if wait is not None:
            raise Refused(429, {"message": "API rate limit exceeded"}, headers)
        return headers

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        reset = str(math.ceil(time.time() + faults.retry_after))
        return Refused(429, {"message": "API rate limit exceeded"},
                       {**headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})

    def _fault_body(self, status: int) -> Any:
        return {"message": "Service Unavailable" if status == 503 else "Internal Server Error"}

    def _violation(self, reason: str) -> None:
        """A request a correct client never sends; the caller holds the lock."""
        self.stats["contract_violations"].append({"reason": reason})

    def _fatal(self, message: str, violation: str | None = None) -> Refused:
        if violation:
            with self._lock:
                self._violation(violation)
        return Refused(400, {"message": message, "errors": [message]})

    # -- /users/track -------------------------------------------------------------------------

    async def track(self, request: Request, faults: Faults) -> Reply:
        body = await self._body(request)
        arrays = {name: body.get(name) for name in ARRAYS if body.get(name) is not None}
        if any(not isinstance(a, list) for a in arrays.values()):
            raise self._fatal("'attributes', 'events' and 'purchases' must be arrays",
                              "a /users/track array is not a list")
        total = sum(len(a) for a in arrays.values())
        if total == 0:
            raise self._fatal(NO_VALID_DATA, "empty /users/track request")
        if total > self.max_objects:
            raise self._fatal("Max Input Length Exceeded",
                              f"{total} objects in one request (limit {self.max_objects})")
        errors = [{"type": problem, "input_array": name, "index": index}
                  for name, items in arrays.items() for index, item in enumerate(items)
                  if (problem := _problem(name, item, faults))]
        if errors and faults.reject_invalid_batches:
            raise Refused(400, {"message": errors[0]["type"], "errors": errors})
        if len(errors) == total:  # nothing to process: fatal, the objects still named
            with self._lock:
                self.stats["objects_refused"] += len(errors)
            raise Refused(400, {"message": NO_VALID_DATA, "errors": errors})
        bad = {(e["input_array"], e["index"]) for e in errors}
        processed: dict[str, int] = {}
        with self._lock:
            self.stats["objects_refused"] += len(errors)
            for name, items in arrays.items():
                for index, item in enumerate(items):
                    if (name, index) not in bad:
                        self._apply(name, item)
                        processed[name] = processed.get(name, 0) + 1
        answer: dict[str, Any] = {"message": "success"}
        answer.update({f"{name}_processed": n for name, n in processed.items()})
        if errors:
            answer["errors"] = errors
        return Reply(201, answer)

    def _apply(self, array: str, item: dict[str, Any]) -> None:
        """Store one valid object; the caller holds the lock."""
        kind, value = next((k, item[k]) for k in IDENTIFIERS if _present(item.get(k)))
        user = self._find(kind, value)
        if user is None:
            # Braze creates no user from an unknown braze_id, nor an alias-only user unless
            # asked to with _update_existing_only: false.
            only_existing = item.get("_update_existing_only")
            if (only_existing is True or kind == "braze_id"
                    or (kind == "user_alias" and only_existing is not False)):
                self.stats["skipped"] += 1
                return
            user = {"braze_id": f"b{self._next:08d}", "external_id": None, "email": None,
                    "phone": None, "user_alias": None, "attributes": {}, "events": [],
                    "purchases": [], "updated": 0}
            self._next += 1
            user[kind] = value if kind != "user_alias" else _alias(value)
            if kind == "email":
                user["attributes"]["email"] = value
            self._users[user["braze_id"]] = user
            if kind == "external_id":
                self._by_external[value] = user
            self.stats["created"] += 1
        elif array == "attributes":
            self.stats["updated"] += 1
        self._tick += 1
        user["updated"] = self._tick
        if array == "attributes":
            for name, attr in item.items():
                if name in ("external_id", "user_alias", "braze_id", "_update_existing_only"):
                    continue
                if attr is None:
                    user["attributes"].pop(name, None)  # null removes the attribute
                else:
                    user["attributes"][name] = attr
                if name in ("email", "phone"):
                    user[name] = attr
        elif array == "events":
            event = {k: v for k, v in item.items() if k in ("name", "time", "properties", "app_id")}
            user["events"].append(event)
            self.stats["events"] += 1
        else:
            user["purchases"].append(copy.deepcopy(item))

    def _find(self, kind: str, value: Any) -> dict[str, Any] | None:
        if kind == "external_id":
            return self._by_external.get(value)
        if kind == "braze_id":
            return self._users.get(value)
        if kind == "user_alias":
            value = _alias(value)
        matches = [u for u in self._users.values() if u[kind] == value]
        if not matches:
            return None
        # Several users share an email or phone: prefer one with an external_id, then the
        # most recently updated.
        return max(matches, key=lambda u: (u["external_id"] is not None, u["updated"]))

    # -- /users/delete ------------------------------------------------------------------------

    async def delete(self, request: Request, faults: Faults) -> Reply:
        body = await self._body(request)
        given = [k for k in DELETE_KINDS if body.get(k) is not None]
        if len(given) != 1:
            raise self._fatal("Give exactly one of " + ", ".join(DELETE_KINDS),
                              f"/users/delete with id kinds {given}")
        ids = body[given[0]]
        if not isinstance(ids, list) or not ids:
            raise self._fatal(f"'{given[0]}' must be a non-empty array",
                              f"/users/delete {given[0]} is not a non-empty list")
        if len(ids) > MAX_DELETE_IDS:
            raise self._fatal(f"The max number of {given[0]} per request was exceeded",
                              f"{len(ids)} ids in one delete (limit {MAX_DELETE_IDS})")
        kind = DELETE_KINDS[given[0]]
        if kind in ("email", "phone") and not all(
            isinstance(e, dict) and _present(e.get(kind))
            and isinstance(e.get("prioritization"), list) and e["prioritization"] for e in ids
        ):
            raise self._fatal(f"each of {given[0]} needs '{kind}' and 'prioritization'",
                              f"delete by {kind} without prioritization")
        deleted = 0
        with self._lock:
            for entry in ids:
                for user in self._delete_targets(kind, entry):
                    del self._users[user["braze_id"]]
                    self._by_external.pop(user["external_id"], None)
                    deleted += 1
            self.stats["deleted"] += deleted
        return Reply(201, {"deleted": deleted, "message": "success"})

    def _delete_targets(self, kind: str, entry: Any) -> list[dict[str, Any]]:
        """Who a delete entry removes; the caller holds the lock and validated the entry."""
        if kind in ("email", "phone"):
            value, order = entry[kind], entry["prioritization"]
            users = [u for u in self._users.values() if u[kind] == value]
            if "identified" in order:
                users = [u for u in users if u["external_id"] is not None]
            elif "unidentified" in order:
                users = [u for u in users if u["external_id"] is None]
            if len(users) > 1 and "most_recently_updated" in order:
                users = [max(users, key=lambda u: u["updated"])]
            return users if len(users) == 1 else []  # ambiguous: nothing is deleted
        user = self._find(kind, entry) if _present(entry) or kind == "user_alias" else None
        return [user] if user else []

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise self._fatal("Invalid JSON in request body", "invalid JSON") from None
        if not isinstance(body, dict):
            raise self._fatal("Request body must be a JSON object", "body is not an object")
        return body


def _problem(array: str, item: Any, faults: Faults) -> str | None:
    """Why Braze refuses one object of `array`, or None."""
    if not isinstance(item, dict):
        return f"'{array}' items must be objects"
    if not any(_present(item.get(k)) for k in IDENTIFIERS):
        return NEEDS_ID
    if "external_id" in item and not isinstance(item["external_id"], str):
        return "'external_id' must be a string"
    if faults.poisons(item):
        return "value refused by the emulator's poison fault"
    if array == "attributes":
        email = item.get("email")
        if email is not None and not (isinstance(email, str) and EMAIL.match(email)):
            return f"Invalid 'email' value: {email!r} is not a valid email address"
        return None
    if array == "events":
        if not (isinstance(item.get("name"), str) and item["name"]):
            return "'name' is required"
        if not _valid_time(item.get("time")):
            return "'time' is required and must be an ISO 8601 date time"
        if "properties" in item and not isinstance(item["properties"], dict):
            return "'properties' must be an object"
        return None
    for field in ("product_id", "currency", "price", "time"):  # purchases
        if item.get(field) is None:
            return f"'{field}' is required"
    return None


def _valid_time(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _present(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() != ""
    return isinstance(value, dict) and bool(value)


def _alias(value: Any) -> str | None:
    if isinstance(value, dict):
        return f"{value.get('alias_label')}:{value.get('alias_name')}"
    return None


def _limit_headers(window: RateWindow, now: float, wait: float | None) -> dict[str, str]:
    """Braze's three headers; Reset is the epoch second the window frees a slot (or now)."""
    limit = window.limit or 0
    return {"X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(window.remaining(now)),
            "X-RateLimit-Reset": str(math.ceil(time.time() + (wait or 0)))}


def build_braze_app(emulator: BrazeEmulator) -> Starlette:
    """The HTTP face of `emulator`: Braze's routes plus the admin routes (common.py)."""

    routes: list[BaseRoute] = [
        Route("/users/track", emulator.endpoint(emulator.track), methods=["POST"]),
        Route("/users/delete", emulator.endpoint(emulator.delete), methods=["POST"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate braze` serves; rate_limit applies to /users/track."""
    extra = {"rate_limit": rate_limit} if rate_limit else {}
    return build_braze_app(BrazeEmulator(keys or None, faults=faults, **extra))
