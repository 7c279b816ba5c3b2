"""Local emulator of HubSpot's CRM v3 objects API (batch upsert, create, update, read and
archive; reads of one record or a page; search), a property's definition (whether its values
are unique) and the v4 default associations, enforcing the contract in
docs/vendor-contracts.md section 1.

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503; faults.latency_ms; 2. `Authorization: Bearer <token>` else 401
   INVALID_AUTHENTICATION; 3. the daily limit, then the rolling ten-second window -> 429
   RATE_LIMIT with `policyName` DAILY or TEN_SECONDLY_ROLLING and no Retry-After (HubSpot
   documents none; a client backs off to the next window). Search requests have their own
   limit instead of the ten-second window, 5 a second (429 policyName SECONDLY), and their
   answers carry no rate-limit headers, as HubSpot documents; 4. injected 429s and 500/502s;
5. the endpoint: a batch is validated whole before anything is stored. One bad input
   refuses the batch with 400 VALIDATION_ERROR, unless `multi_status` is set or every input
   carries its own objectWriteTraceId (the case HubSpot documents for 207), in which case
   the good inputs apply and the answer is 207 with `errors` and `numErrors`.

State lives in memory; `state()` and GET /_emulator/state show it to tests.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
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
    seconds_header,
)
from retl_assets.emulators.hubspot.search import search
from retl_assets.emulators.hubspot.store import (
    DEFAULT_UNIQUE_PROPERTIES,
    CrmStore,
    canonical_object,
    error,
    invalid_input,
)

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
    "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
TEN_SECONDLY = "TEN_SECONDLY_ROLLING"
DAILY = "DAILY"
SECONDLY = "SECONDLY"  # the search API's own limit
LIMIT_MESSAGES = {
    TEN_SECONDLY: "You have reached your ten_secondly_rolling limit.",
    DAILY: "You have reached your daily limit.",
    SECONDLY: "You have reached your secondly limit.",
}
MAX_PAGE = 100  # GET /crm/v3/objects/{type}?limit= caps here (emulator choice to clamp)


class HubSpotEmulator(BaseEmulator):
    """An in-memory HubSpot account (one private app) behind `build_hubspot_app`.

    tokens: accepted bearer tokens; None or empty accepts any non-empty token.
    unique_properties: per object type, the properties upsert may match on (idProperty);
        replaces the default {contacts: {email}, companies: {}} (a company's domain is not
        unique in HubSpot); hs_object_id is always allowed. Its keys (and those of
        `properties`) are the object types served.
    properties: per object type, the properties that exist; others are PROPERTY_DOESNT_EXIST.
        None (or an object type left out) accepts any property.
    multi_status: answer 207 with per-input errors instead of refusing the whole batch.
    rate_limit: (requests, seconds) of the rolling window; HubSpot's is (190, 10.0) for
        Professional/Enterprise private apps, (100, 10.0) for Free/Starter.
    daily_limit: requests per UTC day (HubSpot resets at midnight in the account's zone).
    search_rate_limit: (requests, seconds) of the search API's window, (5, 1.0) at HubSpot.
    send_retry_after: add Retry-After to 429s. Off because HubSpot documents no Retry-After;
        on to test a client that prefers it.
    """

    error_statuses = (500, 502)

    def __init__(
        self,
        tokens: set[str] | None = None,
        *,
        unique_properties: dict[str, set[str]] | None = None,
        properties: dict[str, set[str]] | None = None,
        multi_status: bool = False,
        rate_limit: tuple[int, float] = (190, 10.0),
        daily_limit: int = 1_000_000,
        search_rate_limit: tuple[int, float] = (5, 1.0),
        send_retry_after: bool = False,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        if rate_limit[0] < 1 or rate_limit[1] <= 0:
            raise ValueError("rate_limit must be (max requests >= 1, window seconds > 0)")
        if daily_limit < 1:
            raise ValueError("daily_limit must be at least 1")
        super().__init__(faults, seed)
        self.tokens = set(tokens or ())
        self.rate_limit = rate_limit
        self.daily_limit = daily_limit
        self.send_retry_after = send_retry_after
        self.crm = CrmStore(
            unique_properties if unique_properties is not None else DEFAULT_UNIQUE_PROPERTIES,
            properties,
            multi_status,
        )
        self._window = RateWindow(*rate_limit)
        self._search_window = RateWindow(*search_rate_limit)
        self._clear()

    def _clear(self) -> None:
        self.crm.clear()
        self._window.clear()
        self._search_window.clear()
        self._day = _utc_day()
        self._daily_used = 0
        self.stats = {
            **base_stats(),
            "daily_requests": 0,
            "rate_limited": {TEN_SECONDLY: 0, DAILY: 0, SECONDLY: 0},
            "max_searches_in_window": 0,
            "contract_violations": [],
        }

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "objects": {t: self.crm.snapshot(t) for t in self.crm.object_types},
                "associations": self.crm.association_list(),
                "stats": {**self.stats_copy(), **self.crm.counts},
            }

    def records(self, object_type: str, include_archived: bool = False) -> dict[str, Any]:
        """{id: {properties, archived, createdAt, updatedAt}} of one object type."""
        with self._lock:
            return self.crm.snapshot(canonical_object(object_type), include_archived)

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        token = _bearer(request.headers.get("authorization", ""))
        if not token or (self.tokens and token not in self.tokens):
            # Never echo the token: error bodies end up in logs.
            raise error(401, AUTH_MESSAGE, "INVALID_AUTHENTICATION")
        with self._lock:
            now = time.monotonic()
            if _utc_day() != self._day:
                self._day, self._daily_used = _utc_day(), 0
            if self._daily_used >= self.daily_limit:
                self._window.observe(now)  # still a request the client sent in this window
                self.stats["max_requests_in_window"] = self._window.max_seen
                self.stats["rate_limited"][DAILY] += 1
                raise self._limited(DAILY, self._limit_headers(now), None)
            if request.url.path.endswith("/search"):
                return self._admit_search(now)
            wait = self._window.arrive(now)
            self.stats["max_requests_in_window"] = self._window.max_seen
            if wait is not None:
                self.stats["rate_limited"][TEN_SECONDLY] += 1
                raise self._limited(TEN_SECONDLY, self._limit_headers(now), wait)
            self._daily_used += 1
            self.stats["daily_requests"] = self._daily_used
            return self._limit_headers(now)

    def _admit_search(self, now: float) -> dict[str, str]:
        """The search API's per-second limit; no rate-limit headers on its answers. The
        caller holds the lock."""
        wait = self._search_window.arrive(now)
        self.stats["max_searches_in_window"] = self._search_window.max_seen
        if wait is not None:
            self.stats["rate_limited"][SECONDLY] += 1
            raise self._limited(SECONDLY, {}, wait)
        self._daily_used += 1
        self.stats["daily_requests"] = self._daily_used
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return self._limited(TEN_SECONDLY, headers, faults.retry_after)

    def _fault_body(self, status: int) -> Any:
        # HubSpot treats every error field as optional; its 5xx bodies carry no category.
        message = "Service unavailable" if status == 503 else "internal error"
        return {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}

    def _limited(self, policy: str, headers: dict[str, str], wait: float | None) -> Refused:
        body = {
            "status": "error",
            "message": LIMIT_MESSAGES[policy],
            "errorType": "RATE_LIMIT",  # the documented 429 has errorType, not category
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        headers = dict(headers)
        if self.send_retry_after and wait is not None:
            headers["Retry-After"] = seconds_header(wait)
        return Refused(429, body, headers)

    def _limit_headers(self, now: float) -> dict[str, str]:
        """Both header sets vendor-contracts lists: the current Max/Remaining/Interval and
        the older Secondly/Daily ones. The caller holds the lock."""
        limit, window = self.rate_limit
        per_second = max(1, round(limit / window))
        in_last_second = self._window.admitted_within(now, 1.0)
        return {
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(self._window.remaining(now)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window * 1000)),
            "X-HubSpot-RateLimit-Secondly": str(per_second),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(max(per_second - in_last_second, 0)),
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(
                max(self.daily_limit - self._daily_used, 0)
            ),
        }

    def _violation(self, reason: str) -> None:
        """A request a correct client never sends; the caller holds the lock."""
        self.stats["contract_violations"].append({"reason": reason})

    # -- endpoints ----------------------------------------------------------------------------

    async def upsert(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.upsert(object_type, body, faults, self._violation)

    async def create(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.create(object_type, body, faults, self._violation)

    async def search(self, request: Request, faults: Faults) -> Reply:
        raw = await request.body()
        body = await _json(request) if raw.strip() else {}
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return search(self.crm, object_type, body)

    async def archive(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.archive(object_type, body, self._violation)

    async def read_batch(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.read_batch(object_type, body, self._violation)

    async def update(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.update(object_type, body, faults, self._violation)

    async def read_one(self, request: Request, faults: Faults) -> Reply:
        query = request.query_params
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.get(
                object_type,
                request.path_params["id"],
                query.get("idProperty") or "hs_object_id",
                query.get("archived", "false").lower() == "true",
            )

    async def read_page(self, request: Request, faults: Faults) -> Reply:
        query = request.query_params
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            raise invalid_input("limit must be an integer") from None
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.page(
                object_type,
                min(max(limit, 1), MAX_PAGE),
                query.get("after"),
                query.get("archived", "false").lower() == "true",
            )

    async def read_property(self, request: Request, faults: Faults) -> Reply:
        with self._lock:
            object_type = self.crm.object_type(request.path_params["object"])
            return self.crm.property_definition(object_type, request.path_params["name"])

    async def associate_one(self, request: Request, faults: Faults) -> Reply:
        p = request.path_params
        with self._lock:
            from_type = self.crm.object_type(p["from_object"])
            to_type = self.crm.object_type(p["to_object"])
            return self.crm.associate(from_type, to_type, [(p["from_id"], p["to_id"])], True)

    async def associate_batch(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        pairs: list[tuple[str, str]] = []
        for item in inputs if isinstance(inputs, list) else [None]:
            ids = [_nested_id(item, side) for side in ("from", "to")]
            if ids[0] is None or ids[1] is None:
                with self._lock:
                    self._violation("associate body is not {inputs: [{from: {id}, to: {id}}]}")
                raise invalid_input("expected {'inputs': [{'from': {'id'}, 'to': {'id'}}]}")
            pairs.append((ids[0], ids[1]))
        p = request.path_params
        with self._lock:
            from_type = self.crm.object_type(p["from_object"])
            to_type = self.crm.object_type(p["to_object"])
            return self.crm.associate(from_type, to_type, pairs, False)


def _utc_day() -> str:
    return datetime.now(UTC).date().isoformat()


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:  # also UnicodeDecodeError
        raise invalid_input(str(exc)) from None


def _nested_id(item: Any, side: str) -> str | None:
    ref = item.get(side) if isinstance(item, dict) else None
    value = ref.get("id") if isinstance(ref, dict) else None
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def build_hubspot_app(emulator: HubSpotEmulator) -> Starlette:
    """The HTTP face of `emulator`: HubSpot's routes plus the admin routes (common.py)."""

    objects = "/crm/v3/objects/{object}"
    routes: list[BaseRoute] = [
        Route(f"{objects}/batch/upsert", emulator.endpoint(emulator.upsert), methods=["POST"]),
        Route(f"{objects}/batch/create", emulator.endpoint(emulator.create), methods=["POST"]),
        Route(f"{objects}/search", emulator.endpoint(emulator.search), methods=["POST"]),
        Route(f"{objects}/batch/archive", emulator.endpoint(emulator.archive), methods=["POST"]),
        Route(f"{objects}/batch/read", emulator.endpoint(emulator.read_batch), methods=["POST"]),
        Route(f"{objects}/batch/update", emulator.endpoint(emulator.update), methods=["POST"]),
        Route(objects, emulator.endpoint(emulator.read_page), methods=["GET"]),
        Route(f"{objects}/{{id}}", emulator.endpoint(emulator.read_one), methods=["GET"]),
        Route("/crm/v3/properties/{object}/{name}", emulator.endpoint(emulator.read_property),
              methods=["GET"]),
        Route(
            "/crm/v4/objects/{from_object}/{from_id}/associations/default/{to_object}/{to_id}",
            emulator.endpoint(emulator.associate_one),
            methods=["PUT"],
        ),
        Route(
            "/crm/v4/associations/{from_object}/{to_object}/batch/associate/default",
            emulator.endpoint(emulator.associate_batch),
            methods=["POST"],
        ),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate hubspot` serves."""
    extra = {"rate_limit": rate_limit} if rate_limit else {}
    return build_hubspot_app(HubSpotEmulator(keys or None, faults=faults, **extra))
