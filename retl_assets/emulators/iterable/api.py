"""Local emulator of Iterable's users and events API (bulkUpdate, trackBulk, users/update,
the two user deletes, GET /api/channels), enforcing the contract in docs/vendor-contracts.md
section 4.

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503; faults.latency_ms; 2. the `Api-Key` header, else 401 BadApiKey;
3. the endpoint's own rate limit, per project, as Iterable publishes it (bulkUpdate 5/s,
   trackBulk 10/s, users/update 500/s, the deletes and channels 100/s) -> 429 `{msg, code:
   RateLimitExceeded}` with no Retry-After (Iterable documents none); 4. injected 429s and
   500s;
5. the endpoint. A malformed request (no users/events list, over 1,000 users or 8,000
   events or 4 MB, a user or event with neither email nor userId, or with an email alone in
   a userID-based project, an event without eventName, fields of one name with two types in
   one request) is a 400 `{msg, code, params}` and stores nothing. Otherwise each user or
   event is judged alone: a malformed email or userId, bad dataFields (a field whose type
   differs from the project's), a forgotten user, an identity another user holds
   (conflict*), a disallowed event name fail only that item, listed by identifier in
   `failedUpdates` (and the deprecated top-level `invalidEmails`/`invalidUserIds`); the
   rest are applied and the answer is 200 `{successCount, failCount, failedUpdates, ...}`.
   `faults.reject_invalid_batches` turns any item failure into a whole-request 400.
   users/update takes one user and answers 200 `{msg, code: "Success", params}`, or the
   user's failure as a 400 (409 for a forgotten user or an identity conflict).

How users are identified depends on `project_type` (Iterable's "Creating and Identifying
Users with Iterable APIs" and "Project Types and Unique Identifiers"):
- "email": email identifies the user; a userId given beside it (or in dataFields) is
  updated on that user, and userIds need not be unique. A userId alone finds the user that
  has it; an unknown one fails (notFoundUserIds, emulator choice of list) unless
  `preferUserId` is true, which creates the user with a placeholder email. Events never
  create users.
- "userId": userId identifies the user; an email given beside it is updated on the user
  (emails need not be unique).
- "hybrid" (the default): email identifies the user when given, else userId; both are
  unique, so an identity another user holds fails as conflictEmails/conflictUserIds.
An event's `id` updates the event already stored under it. Deletes are asynchronous at
Iterable, so a delete of an unknown user answers 200 too (emulator choice).
"""

from __future__ import annotations

import copy
import json
import time
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
from retl_assets.emulators.iterable.store import (
    EVENT_FAILURES,
    USER_FAILURES,
    IterableStore,
    json_type,
)

MAX_USERS = 1000
MAX_EVENTS = 8000
MAX_BYTES = 4 * 1024 * 1024
MAX_EVENT_ID_BYTES = 512
RATES = {"bulkUpdate": (5, 1.0), "trackBulk": (10, 1.0), "update": (500, 1.0),
         "delete": (100, 1.0), "channels": (100, 1.0)}
# users/update answers a failure of its one user as an IterableApiResponse error.
UPDATE_ERRORS = {"invalid": (400, "InvalidEmailAddressError", "InvalidUserIdError"),
                 "invalidData": (400, "RequestFieldsTypesMismatched",
                                 "RequestFieldsTypesMismatched"),
                 "forgotten": (409, "ForgottenUserError", "ForgottenUserError"),
                 "conflict": (409, "EmailAlreadyExists", "UserIdAlreadyExists"),
                 "notFound": (400, "UnknownEmailError", "UnknownUserIdError")}
CHANNELS = [{"id": 1, "name": "Marketing Email", "channelType": "Marketing",
             "messageMedium": "Email"}]


def api_error(status: int, code: str, msg: str) -> Refused:
    return Refused(status, {"msg": msg, "code": code, "params": None})


class IterableEmulator(BaseEmulator):
    """An in-memory Iterable project behind `build_iterable_app`.

    api_keys: accepted keys; None or empty accepts any non-empty key.
    rate_limits: per endpoint (bulkUpdate, trackBulk, update, delete, channels), (requests,
        seconds); defaults to Iterable's published per-project limits.
    disallowed_event_names: event names the project refuses (disallowedEventNames).
    events_create_users: False answers an event for an unknown user with notFound*; by
        default True, except in an email-based project.
    project_type: "hybrid" (default), "email" or "userId" (see the module docstring).
    """

    def __init__(self, api_keys: set[str] | None = None, *,
                 rate_limits: dict[str, tuple[int, float]] | None = None,
                 disallowed_event_names: set[str] | None = None,
                 events_create_users: bool | None = None, project_type: str = "hybrid",
                 faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(faults, seed)
        self.api_keys = set(api_keys or ())
        limits = {**RATES, **(rate_limits or {})}
        self._windows = {name: RateWindow(*limit) for name, limit in limits.items()}
        if events_create_users is None:
            events_create_users = project_type != "email"
        self.store = IterableStore(set(disallowed_event_names or ()), events_create_users,
                                   project_type)
        self._clear()

    def _clear(self) -> None:
        self.store.clear()
        for window in self._windows.values():
            window.clear()
        self.stats = {**base_stats(), "max_requests_in_window_by_endpoint": {},
                      "contract_violations": []}

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"users": copy.deepcopy(self.store.users),
                    "events": copy.deepcopy(list(self.store.events.values())),
                    "stats": {**self.stats_copy(), **self.store.counts}}

    def users(self) -> list[dict[str, Any]]:
        """Every user: {email, userId, dataFields}."""
        with self._lock:
            return copy.deepcopy(self.store.users)

    def records(self) -> dict[str, dict[str, Any]]:
        """{email (or userId when the user has no email): dataFields}."""
        with self._lock:
            return {u["email"] or u["userId"]: copy.deepcopy(u["dataFields"])
                    for u in self.store.users}

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self.store.events.values()))

    def forget(self, identifier: str) -> None:
        """GDPR-forget a user by email or userId: later updates of it fail as forgotten*."""
        with self._lock:
            self.store.forgotten.add(identifier)

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        key = request.headers.get("api-key", "").strip()
        if not key or (self.api_keys and key not in self.api_keys):
            raise api_error(401, "BadApiKey", "Invalid API key")  # never echo the key
        name = _endpoint(request)
        with self._lock:
            window = self._windows[name]
            wait = window.arrive(time.monotonic())
            seen = self.stats["max_requests_in_window_by_endpoint"]
            seen[name] = window.max_seen
            self.stats["max_requests_in_window"] = max(seen.values())
        if wait is not None:
            raise api_error(429, "RateLimitExceeded", f"Rate limit exceeded for {name}")
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return api_error(429, "RateLimitExceeded", "Rate limit exceeded")

    def _fault_body(self, status: int) -> Any:
        return {"msg": "Service unavailable" if status == 503 else "Internal server error",
                "code": "GenericError", "params": None}

    def _bad(self, code: str, msg: str) -> Refused:
        """A malformed request a correct client never sends: noted, answered 400."""
        with self._lock:
            self.stats["contract_violations"].append({"reason": msg})
        return api_error(400, code, msg)

    # -- endpoints ----------------------------------------------------------------------------

    async def bulk_update(self, request: Request, faults: Faults) -> Reply:
        users = await self._items(request, "users", MAX_USERS)
        kinds = [self._identity(u, "user", i) for i, u in enumerate(users)]
        self._same_types([u.get("dataFields") for u in users])
        failed: dict[str, list[str]] = {k: [] for k in USER_FAILURES}
        with self._lock:
            verdicts = [self.store.user_failure(u, kind, faults)
                        for u, kind in zip(users, kinds)]
            if faults.reject_invalid_batches and any(verdicts):
                first = next(v for v in verdicts if v)
                raise api_error(400, "BadParams", f"a user failed: {first[0]} {first[1]}")
            created: set[str] = set()
            for user, kind, verdict in zip(users, kinds, verdicts):
                if verdict:
                    failed[verdict[0]].append(verdict[1])
                    continue
                created |= self.store.update(user, kind)
            fails = sum(len(v) for v in failed.values())
            self.store.counts["items_failed"] += fails
        return Reply(200, {"successCount": len(users) - fails, "failCount": fails,
                           "failedUpdates": failed, "createdFields": sorted(created),
                           "filteredOutFields": [], "invalidEmails": failed["invalidEmails"],
                           "invalidUserIds": failed["invalidUserIds"]})

    async def track_bulk(self, request: Request, faults: Faults) -> Reply:
        events = await self._items(request, "events", MAX_EVENTS)
        kinds = [self._identity(e, "event", i) for i, e in enumerate(events)]
        for i, event in enumerate(events):
            if not (isinstance(event.get("eventName"), str) and event["eventName"]):
                raise self._bad("BadParams", f"events[{i}]: eventName is required")
            if "id" in event and not (isinstance(event["id"], str) and event["id"]
                                      and len(event["id"].encode()) <= MAX_EVENT_ID_BYTES):
                raise self._bad("BadParams", f"events[{i}]: id must be a string of at most "
                                             f"{MAX_EVENT_ID_BYTES} bytes")
            created = event.get("createdAt")
            if created is not None and (type(created) is not int):
                raise self._bad("BadParams", f"events[{i}]: createdAt must be a unix timestamp")
        failed: dict[str, list[str]] = {k: [] for k in EVENT_FAILURES}
        disallowed: list[str] = []
        with self._lock:
            verdicts = [self.store.event_failure(e, kind, faults)
                        for e, kind in zip(events, kinds)]
            if faults.reject_invalid_batches and any(verdicts):
                first = next(v for v in verdicts if v)
                raise api_error(400, "BadParams", f"an event failed: {first[0]} {first[1]}")
            for event, kind, verdict in zip(events, kinds, verdicts):
                if verdict and verdict[0] == "disallowed":
                    if event["eventName"] not in disallowed:
                        disallowed.append(event["eventName"])
                elif verdict:
                    failed[verdict[0]].append(verdict[1])
                else:
                    self.store.track(event, kind)
            fails = sum(1 for v in verdicts if v)
            self.store.counts["items_failed"] += fails
        return Reply(200, {"successCount": len(events) - fails, "failCount": fails,
                           "failedUpdates": failed, "disallowedEventNames": disallowed,
                           "createdFields": [], "filteredOutFields": [],
                           "invalidEmails": failed["invalidEmails"],
                           "invalidUserIds": failed["invalidUserIds"]})

    async def update_user(self, request: Request, faults: Faults) -> Reply:
        """POST /api/users/update: one user, answered as a whole."""
        raw = await request.body()
        try:
            user = json.loads(raw)
        except ValueError:
            raise self._bad("BadJsonBody", "Could not parse the request body as JSON") from None
        if not isinstance(user, dict):
            raise self._bad("BadJsonBody", "the body must be a user object")
        kind = self._identity(user, "user", 0)
        with self._lock:
            verdict = self.store.user_failure(user, kind, faults)
            if verdict is None:
                self.store.update(user, kind)
        if verdict is not None:
            key, value = verdict
            family = key.removesuffix("Emails").removesuffix("UserIds")
            status, email_code, user_id_code = UPDATE_ERRORS.get(
                family, (400, "BadParams", "BadParams"))
            with self._lock:
                self.store.counts["items_failed"] += 1
            raise api_error(status, email_code if key.endswith("Emails") else user_id_code,
                            f"{key}: {value}")
        return Reply(200, {"msg": "User successfully created/updated.", "code": "Success",
                           "params": None})

    async def delete_by_email(self, request: Request, faults: Faults) -> Reply:
        return self._delete("email", request.path_params["email"])

    async def delete_by_user_id(self, request: Request, faults: Faults) -> Reply:
        return self._delete("userId", request.path_params["user_id"])

    def _delete(self, kind: str, value: str) -> Reply:
        with self._lock:
            self.store.delete(kind, value)
        return Reply(200, {"msg": f"User {value} will be deleted", "code": "Success",
                           "params": None})

    async def channels(self, request: Request, faults: Faults) -> Reply:
        return Reply(200, {"channels": CHANNELS})

    # -- request checks -----------------------------------------------------------------------

    async def _items(self, request: Request, array: str, most: int) -> list[dict[str, Any]]:
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            raise self._bad("BatchTooLarge", f"request body over {MAX_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise self._bad("BadJsonBody", "Could not parse the request body as JSON") from None
        items = body.get(array) if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise self._bad("BadJsonBody", f"'{array}' must be a list of objects")
        if len(items) > most:
            raise self._bad("BatchTooLarge", f"{len(items)} {array} in one request "
                                             f"(limit {most})")
        return items

    def _identity(self, item: dict[str, Any], what: str, index: int) -> str:
        """The identifier that looks the item's user up (IterableStore.lookup_kind)."""
        kind = self.store.lookup_kind(item)
        if kind is None:
            given = item.get("email") not in (None, "")
            raise self._bad("BadParams", f"{what} {index}: " + (
                "a userID-based project identifies users by userId, not by email alone"
                if given else "give an email or a userId"))
        return kind

    def _same_types(self, field_sets: list[Any]) -> None:
        seen: dict[str, str] = {}
        for fields in field_sets:
            for name, value in (fields or {}).items() if isinstance(fields, dict) else ():
                kind = json_type(value)
                if value is not None and seen.setdefault(name, kind) != kind:
                    raise self._bad("RequestFieldsTypesMismatched",
                                    f"field {name!r} has two types in one request")


def _endpoint(request: Request) -> str:
    path = request.url.path
    if path.endswith("/bulkUpdate"):
        return "bulkUpdate"
    if path.endswith("/trackBulk"):
        return "trackBulk"
    if request.method == "POST" and path.endswith("/users/update"):
        return "update"
    return "channels" if path.endswith("/channels") else "delete"


def build_iterable_app(emulator: IterableEmulator) -> Starlette:
    """The HTTP face of `emulator`: Iterable's routes plus the admin routes (common.py)."""

    routes: list[BaseRoute] = [
        Route("/api/users/bulkUpdate", emulator.endpoint(emulator.bulk_update), methods=["POST"]),
        Route("/api/events/trackBulk", emulator.endpoint(emulator.track_bulk), methods=["POST"]),
        Route("/api/users/update", emulator.endpoint(emulator.update_user), methods=["POST"]),
        Route("/api/users/byUserId/{user_id:path}", emulator.endpoint(emulator.delete_by_user_id),
              methods=["DELETE"]),
        Route("/api/users/{email:path}", emulator.endpoint(emulator.delete_by_email), methods=["DELETE"]),
        Route("/api/channels", emulator.endpoint(emulator.channels), methods=["GET"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate iterable` serves; rate_limit replaces bulkUpdate's limit."""
    limits = {"bulkUpdate": rate_limit} if rate_limit else None
    return build_iterable_app(IterableEmulator(keys or None, rate_limits=limits,
                                               faults=faults))
