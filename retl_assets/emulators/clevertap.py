"""Local emulator of CleverTap's upload API (`POST /1/upload`) and Get User Profile by id
(`GET /1/profile.json`), enforcing docs/vendor-contracts.md section 6.

What a client meets here, in order:
0. on arrival, the request joins the account's requests in flight; more than 15 (the
   published limit) and it will be answered 429 "Too many concurrent requests" once
   authenticated. `max_in_flight` records the most a client ever had open at once;
1. faults.dead -> 503; faults.latency_ms (the request stays in flight meanwhile);
2. `X-CleverTap-Account-Id` and `X-CleverTap-Passcode`, else 401; the concurrency limit;
3. injected 429s (no Retry-After: CleverTap documents none) and 500/503s;
4. the endpoint: `{"d": [...]}` of at most 1,000 records, else 400; each record is checked
   on its own (identity, type, ts in epoch seconds, event name, profile field values, keys
   <= 120 bytes, values <= 512 bytes) and the answer is 200 `{status: success | partial |
   fail, processed, unprocessed: [{status: "fail", code, error, record}]}`, the valid
   records stored. There is no time-window limit and no dedup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from retl_assets.emulators.clevertap_store import CleverTapAccount, record_failure
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
MAX_RECORDS = 1000
CONCURRENCY_MESSAGE = "Too many concurrent requests"


def _fail(code: int, error: str) -> dict[str, Any]:
    return {"status": "fail", "error": error, "code": code}


class CleverTapEmulator(BaseEmulator):
    """One CleverTap account behind `build_clevertap_app`.

    accounts: {account id: accepted passcodes}; None accepts any non-empty pair.
    max_concurrent: requests in flight per account (CleverTap: 15).
    """

    error_statuses = (500, 503)

    def __init__(self, accounts: dict[str, set[str]] | None = None, *,
                 max_concurrent: int = MAX_CONCURRENT, faults: Faults | None = None,
                 seed: int = 0) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        super().__init__(faults, seed)
        self.accounts = {k: set(v) for k, v in accounts.items()} if accounts is not None else None
        self.max_concurrent = max_concurrent
        self.account = CleverTapAccount()
        self._in_flight = 0
        self._window = RateWindow(None, 1.0)  # observes requests a second; no such limit
        self._clear()

    def _clear(self) -> None:
        self.account.clear()
        self._window.clear()
        self.stats = {**base_stats(), "max_in_flight": 0, "rate_limited": 0,
                      "contract_violations": []}

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
        """Count the request in flight from arrival to answer, around the shared pipeline."""
        with self._lock:
            self._in_flight += 1
            request.state.over_limit = self._in_flight > self.max_concurrent
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
            self._window.observe(time.monotonic())
            self.stats["max_requests_in_window"] = self._window.max_seen
        try:
            return await super().respond(request, process)
        finally:
            with self._lock:
                self._in_flight -= 1

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
                self._violation(f"more than {self.max_concurrent} requests in flight")
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

    def api(handler: Process) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await emulator.respond(request, handler)

        return endpoint

    routes: list[BaseRoute] = [
        Route("/1/upload", api(emulator.upload), methods=["POST"]),
        Route("/1/profile.json", api(emulator.profile), methods=["GET"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate clevertap` serves. A key "ACCOUNT:PASSCODE" admits that pair;
    without keys any pair is admitted. CleverTap has no time-window limit: `rate_limit`
    (n, seconds) is read as at most n requests in flight."""
    accounts: dict[str, set[str]] = {}
    for key in keys or ():
        account, _, passcode = key.partition(":")
        accounts.setdefault(account, set()).add(passcode)
    limit = rate_limit[0] if rate_limit else MAX_CONCURRENT
    return build_clevertap_app(CleverTapEmulator(accounts or None, max_concurrent=limit,
                                                 faults=faults))
