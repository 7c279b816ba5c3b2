"""Local emulator of Clarify's JSON:API record endpoints in one workspace, enforcing
docs/vendor-contracts.md section 7: what clarify-api-docs.vercel.app ("Clarify API Beta",
owner not confirmed) publishes, and where nothing is published, what our client chose
(destinations/clarify.py), marked "emulator choice".

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503; faults.latency_ms;
2. `Authorization: api-key <KEY>` else 401 (a Bearer token is for OAuth apps: refused here);
3. the pace, each kind of call in its own window -> 429 with a JSON:API error and no
   Retry-After (Clarify mentions none):
   - bulk writes: 1 a second, Clarify's recommended pace (which it does not say it
     enforces; refusing the next one is the strict reading);
   - reads (GET): 100 a minute, as published;
   - single-record deletes: 10 a second (emulator choice, as our client's default);
4. injected 429s (also without Retry-After) and 500s;
5. the workspace slug and object (404 for another), then the endpoint:
   - POST /objects/{object}/records/bulk: at most `max_bulk` (25) records, else 422; each
     needs `type` equal to the object, `attributes` and no `id`; a person's
     `email_addresses` and a company's `domains` are `{items: [...]}` of valid values; a
     person's `name` is {full_name, first_name, last_name}. The batch is atomic: any
     invalid record refuses the whole request with 422 (400 for a duplicate: values
     matching two records), errors `{"errors": [{status, title, detail}]}`. Otherwise each
     record updates the person/company holding any one of its values, or creates one, and
     the answer lists the resources in input order;
   - DELETE /objects/{object}/records/{id}: 204, or 404 for an unknown id (no bulk delete);
   - GET /objects/{object}/records/{id}, GET /objects/{object}/resources (paged reads),
     GET /schemas (the credential check).
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from retl_assets.emulators.clarify.store import OBJECTS, Workspace, refused
from retl_assets.emulators.common import (
    BaseEmulator,
    Faults,
    RateWindow,
    Refused,
    Reply,
    base_stats,
    emulator_app,
)

DEFAULT_RATE = (1, 1.0)  # bulk writes: the published pace, one request a second
DELETE_RATE = (10, 1.0)  # single-record deletes: unpublished; emulator choice, as the client's
READ_RATE = (100, 60.0)  # reads, as published
DEFAULT_BULK = 25  # records per bulk request, as published


class ClarifyEmulator(BaseEmulator):
    """One Clarify workspace in memory behind `build_clarify_app`.

    keys: accepted API keys; None or empty accepts any non-empty key.
    workspace: the slug the API answers for; others are 404.
    attributes: per object, the attributes that exist; None accepts any.
    rate_limit, delete_rate, read_rate: (requests, seconds) of bulk writes, deletes, reads.
    """

    def __init__(
        self,
        keys: set[str] | None = None,
        *,
        workspace: str = "acme",
        attributes: dict[str, set[str]] | None = None,
        rate_limit: tuple[int, float] = DEFAULT_RATE,
        delete_rate: tuple[int, float] = DELETE_RATE,
        read_rate: tuple[int, float] = READ_RATE,
        max_bulk: int = DEFAULT_BULK,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(faults, seed)
        self.keys = set(keys or ())
        self.workspace = workspace
        self.rate_limit = rate_limit
        self.max_bulk = max_bulk
        self.store = Workspace(attributes)
        self._windows = {"write": RateWindow(*rate_limit), "DELETE": RateWindow(*delete_rate),
                         "GET": RateWindow(*read_rate)}
        self._clear()

    def _clear(self) -> None:
        self.store.clear()
        for window in self._windows.values():
            window.clear()
        # max_requests_in_window: bulk writes, the published pace.
        self.stats = {**base_stats(), "bulk_requests": 0, "rate_limited": 0,
                      "max_deletes_in_window": 0, "max_reads_in_window": 0}

    # -- Python API for in-process tests ------------------------------------------------------

    def records(self, obj: str = "person") -> dict[str, dict[str, Any]]:
        """{id: attributes} of one object."""
        with self._lock:
            return self.store.snapshot(obj)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"records": {o: self.store.snapshot(o) for o in OBJECTS},
                    "stats": {**self.stats_copy(), **self.store.counts}}

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "api-key" or not key or (self.keys and key not in self.keys):
            raise refused(401, "Unauthorized", "missing or invalid API key")
        window = self._windows.get(request.method, self._windows["write"])
        with self._lock:
            limited = window.arrive(time.monotonic()) is not None
            self.stats["max_requests_in_window"] = self._windows["write"].max_seen
            self.stats["max_deletes_in_window"] = self._windows["DELETE"].max_seen
            self.stats["max_reads_in_window"] = self._windows["GET"].max_seen
            if limited:
                self.stats["rate_limited"] += 1
        if limited:
            raise self._limited()
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return self._limited()  # faults.retry_after is unused: Clarify sends no Retry-After

    def _fault_body(self, status: int) -> Any:
        title = "Service Unavailable" if status == 503 else "Internal Server Error"
        return {"errors": [{"status": status, "title": title}]}

    def _limited(self) -> Refused:
        return refused(429, "Too Many Requests", "rate limit exceeded, back off and retry")

    def _object(self, request: Request) -> str:
        slug = request.path_params["slug"]
        if slug != self.workspace:
            raise refused(404, "Not Found", f"workspace {slug!r} does not exist")
        return self.store.object(request.path_params.get("object", "person"))

    # -- endpoints ----------------------------------------------------------------------------

    async def bulk(self, request: Request, faults: Faults) -> Reply:
        obj = self._object(request)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise refused(400, "Bad Request", f"body is not JSON: {exc}") from None
        with self._lock:
            self.stats["bulk_requests"] += 1
            return self.store.bulk_upsert(obj, body, self.max_bulk, faults)

    async def get_one(self, request: Request, faults: Faults) -> Reply:
        obj = self._object(request)
        with self._lock:
            return self.store.get(obj, request.path_params["id"])

    async def delete_one(self, request: Request, faults: Faults) -> Reply:
        obj = self._object(request)
        with self._lock:
            return self.store.delete(obj, request.path_params["id"])

    async def resources(self, request: Request, faults: Faults) -> Reply:
        obj = self._object(request)
        try:
            limit = int(request.query_params.get("page[limit]", "100"))
            offset = int(request.query_params.get("page[offset]", "0"))
        except ValueError:
            raise refused(400, "Bad Request", "page[limit] and page[offset] are integers") from None
        with self._lock:
            return self.store.page(obj, limit, offset, str(request.url.replace(query="")))

    async def schemas(self, request: Request, faults: Faults) -> Reply:
        self._object(request)
        return Reply(200, {"data": [{"type": "schema", "id": f"entities/{o}",
                                     "attributes": {"title": o}} for o in OBJECTS]})


def build_clarify_app(emulator: ClarifyEmulator) -> Starlette:
    """The HTTP face of `emulator`: Clarify's routes plus the admin routes (common.py)."""

    root = "/v1/workspaces/{slug}"
    records = f"{root}/objects/{{object}}/records"
    routes: list[BaseRoute] = [
        Route(f"{records}/bulk", emulator.endpoint(emulator.bulk), methods=["POST"]),
        Route(f"{records}/{{id}}", emulator.endpoint(emulator.get_one), methods=["GET"]),
        Route(f"{records}/{{id}}", emulator.endpoint(emulator.delete_one), methods=["DELETE"]),
        Route(f"{root}/objects/{{object}}/resources", emulator.endpoint(emulator.resources), methods=["GET"]),
        Route(f"{root}/schemas", emulator.endpoint(emulator.schemas), methods=["GET"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate clarify` serves (workspace slug "acme"). `rate_limit` paces
    every write, bulk and delete alike, as a project's `rate_limit` paces our client."""
    extra = {"rate_limit": rate_limit, "delete_rate": rate_limit} if rate_limit else {}
    return build_clarify_app(ClarifyEmulator(keys or None, faults=faults, **extra))
