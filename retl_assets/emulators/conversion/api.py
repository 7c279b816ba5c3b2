"""Local emulator of Conversion's API (v2 contacts and events batches, v1 delete and read by
email, the contacts export), enforcing docs/vendor-contracts.md section 8; custom objects
follow the design our client uses (UNVERIFIED, see destinations/conversion.py).

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503; faults.latency_ms;
2. `X-API-Key: <key>` else 401 {"message"} (the key never echoed);
3. the rate limit, 10 requests a second (v1's published limit; v2 publishes none) -> 429
   {"message"}, with Retry-After only if `send_retry_after` (none is documented);
4. injected 429s and 500s;
5. the endpoint: a malformed request or too many items -> 400 {"message"}; otherwise each
   item is processed on its own and answered in its own result:
   - POST /v2/contacts/batch (1-1,000): match by userId, then email; only an email
     creates; invalid email, conflicting identifiers, `updateOnly` misses fail the item;
   - POST /v2/events/batch (1-200): userId or email of an existing contact, `event` (the
     name, required), an ISO 8601 timestamp; a repeated eventId updates the event; answered
     {"data": {processed, tracked, failed, results: [{success, cnvEventId, cnvContactId}]}};
   - POST /v2/objects/{type}/batch (1-200): id, an existing contact, fields,
     relationshipFields;
   - DELETE and GET /v1/contacts/by-email/{email} (404 when there is none);
   - POST /v2/exports/contacts {limit, cursor} (the credential check).
"""

from __future__ import annotations

import copy
import json
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
from retl_assets.emulators.conversion.store import Account, bad_request

DEFAULT_RATE = (10, 1.0)


class ConversionEmulator(BaseEmulator):
    """One Conversion account in memory behind `build_conversion_app`.

    keys: accepted API keys; None or empty accepts any non-empty key.
    """

    def __init__(
        self,
        keys: set[str] | None = None,
        *,
        rate_limit: tuple[int, float] = DEFAULT_RATE,
        send_retry_after: bool = False,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(faults, seed)
        self.keys = set(keys or ())
        self.rate_limit = rate_limit
        self.send_retry_after = send_retry_after
        self.account = Account()
        self._window = RateWindow(*rate_limit)
        self._clear()

    def _clear(self) -> None:
        self.account.clear()
        self._window.clear()
        self.stats = {**base_stats(), "rate_limited": 0}

    # -- Python API for in-process tests ------------------------------------------------------

    def contacts(self) -> dict[str, dict[str, Any]]:
        """{email: contact} of every contact."""
        with self._lock:
            return {c["email"]: copy.deepcopy(c) for c in self.account.contacts.values()}

    def events(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.account.events)

    def objects(self, object_type: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.account.objects.get(object_type, {}))

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"contacts": list(copy.deepcopy(self.account.contacts).values()),
                    "events": copy.deepcopy(self.account.events),
                    "objects": copy.deepcopy(self.account.objects),
                    "stats": {**self.stats_copy(), **self.account.counts}}

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        key = request.headers.get("x-api-key", "").strip()
        if not key or (self.keys and key not in self.keys):
            raise Refused(401, {"message": "Invalid or missing API key"})
        wait = self._arrive(self._window)
        if wait is not None:
            raise self._limited(wait)
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return self._limited(faults.retry_after)

    def _fault_body(self, status: int) -> Any:
        return {"message": "Service unavailable" if status == 503 else "Internal server error"}

    def _limited(self, wait: float) -> Refused:
        headers = {"Retry-After": seconds_header(wait)} if self.send_retry_after else {}
        return Refused(429, {"message": "Too many requests"}, headers)

    # -- endpoints ----------------------------------------------------------------------------

    async def contacts_batch(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            return self.account.upsert_contacts(body, faults)

    async def events_batch(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            return self.account.track(body, faults)

    async def objects_batch(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            return self.account.upsert_objects(request.path_params["type"], body, faults)

    async def delete_contact(self, request: Request, faults: Faults) -> Reply:
        with self._lock:
            return self.account.delete_by_email(request.path_params["email"])

    async def get_contact(self, request: Request, faults: Faults) -> Reply:
        with self._lock:
            return self.account.get_by_email(request.path_params["email"])

    async def export_contacts(self, request: Request, faults: Faults) -> Reply:
        body = await _json(request)
        with self._lock:
            return self.account.export(body)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise bad_request(f"body is not JSON: {exc}") from None


def build_conversion_app(emulator: ConversionEmulator) -> Starlette:
    """The HTTP face of `emulator`: Conversion's routes plus the admin routes (common.py)."""

    by_email = "/v1/contacts/by-email/{email}"
    routes: list[BaseRoute] = [
        Route("/v2/contacts/batch", emulator.endpoint(emulator.contacts_batch), methods=["POST"]),
        Route("/v2/events/batch", emulator.endpoint(emulator.events_batch), methods=["POST"]),
        Route("/v2/objects/{type}/batch", emulator.endpoint(emulator.objects_batch), methods=["POST"]),
        Route(by_email, emulator.endpoint(emulator.delete_contact), methods=["DELETE"]),
        Route(by_email, emulator.endpoint(emulator.get_contact), methods=["GET"]),
        Route("/v2/exports/contacts", emulator.endpoint(emulator.export_contacts), methods=["POST"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate conversion` serves."""
    extra = {"rate_limit": rate_limit} if rate_limit else {}
    return build_conversion_app(ConversionEmulator(keys or None, faults=faults, **extra))
