"""Local emulator of CleverTap's upload API (`POST /1/upload`), Delete User Profile
(`POST /1/delete/profiles.json`) and Get User Profile by id (`GET /1/profile.json`),
enforcing docs/vendor-contracts.md section 6.

What a client meets here, in order:
0. on arrival, the request joins the account's requests in flight on its API (CleverTap
   limits each API apart): more than 15 on the upload API (the published limit), or more
   than 3 on the delete API (a third-party digest of CleverTap's table), and it will be
   answered 429 "Too many concurrent requests" once authenticated. `max_in_flight` and
   `max_deletes_in_flight` record the most a client ever had open at once;
1. faults.dead -> 503; faults.latency_ms (the request stays in flight meanwhile);
2. `X-CleverTap-Account-Id` and `X-CleverTap-Passcode`, else 401; the concurrency limit;
3. injected 429s (no Retry-After: CleverTap documents none) and 500/503s;
4. the endpoint: `{"d": [...]}` of at most 1,000 records, else 400; each record is checked
   on its own (identity, type, ts in epoch seconds, event name, an evtData object, profile
   field values, keys <= 120 bytes, values <= 512 bytes) and the answer is 200 `{status: success | partial |
   fail, processed, unprocessed: [{status: "fail", code, error, record}]}`, the valid
   records stored. There is no time-window limit and no dedup.
5. the delete endpoint: a JSON object with `identity` or `guid` (the objectId of the upload
   API), a string or an array of at most 100 strings, not both, else 400; the profiles
   named are removed (an unknown one is no error) and the answer is 200 `{status:
   "success", processed}` (CleverTap does not document this body). `delete_sizes` in the
   stats lists how many values each accepted delete carried.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from retl_assets.emulators.clevertap.store import CleverTapAccount, record_failure
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

MAX_CONCURRENT = 15
MAX_CONCURRENT_DELETES = 3
MAX_RECORDS = 1000
MAX_DELETE_VALUES = 100
DELETE_PATH = "/1/delete/profiles.json"
DELETE_KEYS = {"identity": "identity", "guid": "objectId"}  # body key -> upload id field
CONCURRENCY_MESSAGE = "Too many concurrent requests"


def _fail(code: int, error: str) -> dict[str, Any]:
    return {"status": "fail", "error": error, "code": code}


class CleverTapEmulator(BaseEmulator):
    """One CleverTap account behind `build_clevertap_app`.

    accounts: {account id: accepted passcodes}; None accepts any non-empty pair.
    max_concurrent: requests in flight per account on the upload API (CleverTap: 15).
    max_concurrent_deletes: the same on the delete API (3).
    """

    error_statuses = (500, 503)

    def __init__(self, accounts: dict[str, set[str]] | None = None, *,
                 max_concurrent: int = MAX_CONCURRENT,
                 max_concurrent_deletes: int = MAX_CONCURRENT_DELETES,
                 faults: Faults | None = None, seed: int = 0) -> None:
        if max_concurrent < 1 or max_concurrent_deletes < 1:
            raise ValueError("max_concurrent and max_concurrent_deletes must be at least 1")
        super().__init__(faults, seed)
        self.accounts = {k: set(v) for k, v in accounts.items()} if accounts is not None else None
        self.max_concurrent = max_concurrent
        self.max_concurrent_deletes = max_concurrent_deletes
        self.account = CleverTapAccount()
        self._in_flight = {"upload": 0, "delete": 0}
        self._window = RateWindow(None, 1.0)  # observes requests a second; no such limit
        self._clear()

    def _clear(self) -> None:
        self.account.clear()
        self._window.clear()
        self.stats = {**base_stats(), "max_in_flight": 0, "max_deletes_in_flight": 0,
                      "rate_limited": 0, "contract_violations": [], "delete_sizes": []}

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"profiles": self.account.profile_map(), "events": self.account.event_list(),
                    "stats": {**self.stats_copy(), **self.account.counts}}

    def profiles(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self.account.profile_map()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.account.event_list()

    # -- the shared pipeline's hooks ----------------------------------------------------------

    async def respond(self, request: Request, process: Process) -> Response:
        """Count the request in flight on its API from arrival to answer, around the shared
        pipeline."""
        api = "delete" if request.url.path == DELETE_PATH else "upload"
        limit, peak = ((self.max_concurrent_deletes, "max_deletes_in_flight") if api == "delete"
                       else (self.max_concurrent, "max_in_flight"))
        with self._lock:
            self._in_flight[api] += 1
            request.state.over_limit = self._in_flight[api] > limit
            request.state.limit = limit
            self.stats[peak] = max(self.stats[peak], self._in_flight[api])
            self._window.observe(time.monotonic())
            self.stats["max_requests_in_window"] = self._window.max_seen
        try:
            return await super().respond(request, process)
        finally:
            with self._lock:
                self._in_flight[api] -= 1

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        account = request.headers.get("x-clevertap-account-id", "")
        passcode = request.headers.get("x-clevertap-passcode", "")
        known = (self.accounts is None or passcode in self.accounts.get(account, set()))
        if not account or not passcode or not known:
            # Never echo the passcode: error bodies end up in logs.
            raise Refused(401, _fail(401, "Invalid Credentials"))
        if request.state.over_limit:
            with self._lock:
                self.stats["rate_limited"] += 1
                self._violation(f"more than {request.state.limit} requests in flight on "
                                f"{request.url.path}")
            raise Refused(429, _fail(429, CONCURRENCY_MESSAGE))
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return Refused(429, _fail(429, CONCURRENCY_MESSAGE), headers)

    def _fault_body(self, status: int) -> Any:
        return _fail(status, "Service Unavailable. Please retry later." if status == 503
                     else "Server Error")

    def _violation(self, reason: str) -> None:
        """A request a correct client never sends; the caller holds the lock."""
        self.stats["contract_violations"].append({"reason": reason})

    # -- endpoints ----------------------------------------------------------------------------

    async def upload(self, request: Request, faults: Faults) -> Reply:
        try:
            body = json.loads(await request.body())
        except ValueError:  # also UnicodeDecodeError
            body = None
        records = body.get("d") if isinstance(body, dict) else None
        if not isinstance(records, list):
            with self._lock:
                self._violation("body is not {\"d\": [...]}")
            raise Refused(400, _fail(400, "Bad Request: the payload must be {\"d\": [...]}"))
        if len(records) > MAX_RECORDS:
            with self._lock:
                self._violation(f"more than {MAX_RECORDS} records in one request")
            raise Refused(400, _fail(400, f"Bad Request: at most {MAX_RECORDS} records "
                                          f"per request"))
        unprocessed = []
        with self._lock:
            for record in records:
                problem = record_failure(record, faults)
                if problem is None:
                    self.account.store(record)
                    continue
                unprocessed.append({"status": "fail", "code": problem[0], "error": problem[1],
                                    "record": record})
            self.account.counts["records_failed"] += len(unprocessed)
        processed = len(records) - len(unprocessed)
        status = "success" if not unprocessed else "partial" if processed else "fail"
        return Reply(200, {"status": status, "processed": processed, "unprocessed": unprocessed})

    async def delete(self, request: Request, faults: Faults) -> Reply:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        given = [k for k in DELETE_KEYS if isinstance(body, dict) and body.get(k) is not None]
        if len(given) != 1:
            with self._lock:
                self._violation("delete body is not {\"identity\": ...} or {\"guid\": ...}")
            raise Refused(400, _fail(400, "Bad Request: pass either identity or guid"
                                          + (", not both" if given else "")))
        key = given[0]
        values = body[key] if isinstance(body[key], list) else [body[key]]
        if not values or not all(isinstance(v, str) and v for v in values):
            with self._lock:
                self._violation(f"{key} is not a string or an array of strings")
            raise Refused(400, _fail(400, f"Bad Request: {key} must be a string or an array "
                                          f"of strings"))
        if len(values) > MAX_DELETE_VALUES:
            with self._lock:
                self._violation(f"more than {MAX_DELETE_VALUES} values in one delete")
            raise Refused(400, _fail(400, f"Bad Request: at most {MAX_DELETE_VALUES} "
                                          f"{key} values per request"))
        with self._lock:
            self.account.delete(DELETE_KEYS[key], values)
            self.stats["delete_sizes"].append(len(values))
        return Reply(200, {"status": "success", "processed": len(values)})

    async def profile(self, request: Request, faults: Faults) -> Reply:
        query = request.query_params
        field = next((f for f in ("identity", "email", "objectId") if query.get(f)), None)
        if field is None:
            raise Refused(400, _fail(400, "Bad Request: give identity, email or objectId"))
        with self._lock:
            profiles = self.account.profiles
            if field == "email":
                found = next((p for p in profiles.values()
                              if p["profileData"].get("Email") == query["email"]), None)
            else:
                found = profiles.get(f"{field}:{query[field]}")
            if found is None:
                return Reply(200, _fail(404, "Profile not found"))
            return Reply(200, {"status": "success", "record": {
                field: query[field], "profileData": dict(found["profileData"])}})


def build_clevertap_app(emulator: CleverTapEmulator) -> Starlette:
    """The HTTP face of `emulator`: CleverTap's routes plus the admin routes (common.py)."""

    routes: list[BaseRoute] = [
        Route("/1/upload", emulator.endpoint(emulator.upload), methods=["POST"]),
        Route(DELETE_PATH, emulator.endpoint(emulator.delete), methods=["POST"]),
        Route("/1/profile.json", emulator.endpoint(emulator.profile), methods=["GET"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate clevertap` serves. A key "ACCOUNT:PASSCODE" admits that pair;
    without keys any pair is admitted. CleverTap has no time-window limit: `rate_limit`
    (n, seconds) is read as at most n requests in flight (and no more than 3 deletes)."""
    accounts: dict[str, set[str]] = {}
    for key in keys or ():
        account, _, passcode = key.partition(":")
        accounts.setdefault(account, set()).add(passcode)
    limit = rate_limit[0] if rate_limit else MAX_CONCURRENT
    return build_clevertap_app(CleverTapEmulator(
        accounts or None, max_concurrent=limit,
        max_concurrent_deletes=min(limit, MAX_CONCURRENT_DELETES), faults=faults))
