"""What every destination emulator shares: faults, a seeded random source, sliding rate
windows, the order faults are applied in, status counting and the admin routes.

A vendor's api.py (emulators/segment/, emulators/hubspot/, ...) subclasses `BaseEmulator`,
implements `_admit` (authentication and the vendor's own limits) and the request handling,
and builds its app with `emulator_app`, which adds /_emulator/{state,faults,reset} and /healthz.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route


@dataclass
class Faults:
    """Faults injected in front of the contract checks; all off by default.

    Every emulator honours every field; how a refusal looks (body, status) is the vendor's.
    """

    error_rate: float = 0  # fraction of requests answered with a server error (500, 502...)
    rate_429: float = 0  # fraction of requests answered 429, on top of the vendor's limits
    retry_after: float = 1  # Retry-After seconds on injected 429s, where the vendor sends one
    latency_ms: float = 0  # added to every API request
    dead: bool = False  # answer 503 to every API request
    poison: dict[str, Any] | None = None  # {"path": "traits.email", "value": x}: refuse that record
    reject_invalid_batches: bool = False  # refuse a whole batch where the vendor would drop one

    def validate(self) -> None:
        for name in ("error_rate", "rate_429"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.retry_after < 0 or self.latency_ms < 0:
            raise ValueError("retry_after and latency_ms must not be negative")
        if self.poison is not None and (
            not isinstance(self.poison, dict)
            or not isinstance(self.poison.get("path"), str)
            or "value" not in self.poison
        ):
            raise ValueError('poison must be {"path": "<dotted.path>", "value": <value>} or None')

    def poisons(self, record: Any) -> bool:
        """Whether `record` carries the poison value at the poison path."""
        if self.poison is None:
            return False
        found, value = lookup(record, self.poison["path"])
        return found and value == self.poison["value"]


class Refused(Exception):
    """A request answered with an error; raised anywhere in the pipeline, turned into a reply."""

    def __init__(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class Reply:
    """A successful answer; `body=None` sends no body (HubSpot's 204s)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def lookup(record: Any, dotted: str) -> tuple[bool, Any]:
    """(found, value) at a dotted path such as "traits.email"."""
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def seconds_header(value: float) -> str:
    """Retry-After as a plain number: "1", "0.05" (fractional values keep tests fast)."""
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


class RateWindow:
    """A sliding window of `window` seconds admitting at most `limit` requests (None: no limit).

    Every arrival is recorded, admitted or not, so `max_seen` is the most requests a client
    sent within any `window` seconds. A test compares it with the vendor's limit to prove the
    client never went over, which counting only admitted requests could not show. Not
    thread-safe: the emulator calls it under its lock.
    """

    def __init__(self, limit: int | None, window: float) -> None:
        if (limit is not None and limit < 1) or window <= 0:
            raise ValueError("a rate window needs limit >= 1 (or None) and window seconds > 0")
        self.limit = limit
        self.window = window
        self.max_seen = 0
        self._arrived: deque[float] = deque()
        self._admitted: deque[float] = deque()

    def arrive(self, now: float) -> float | None:
        """Record a request at `now`; None when admitted, else seconds until a slot frees."""
        self.observe(now)
        if self.limit is not None and len(self._admitted) >= self.limit:
            wait = self._admitted[0] + self.window - now
            return max(math.ceil(wait * 1000) / 1000, 0.001)
        self._admitted.append(now)
        return None

    def observe(self, now: float) -> None:
        """Record a request refused before it could be admitted (another limit said no)."""
        self._expire(now)
        self._arrived.append(now)
        self.max_seen = max(self.max_seen, len(self._arrived))

    def remaining(self, now: float) -> int:
        """Requests still admitted in the current window (0 when there is no limit)."""
        self._expire(now)
        if self.limit is None:
            return 0
        return max(self.limit - len(self._admitted), 0)

    def admitted_within(self, now: float, seconds: float) -> int:
        """Admitted requests in the last `seconds` (for per-second headers)."""
        return sum(1 for t in reversed(self._admitted) if t > now - seconds)

    def clear(self) -> None:
        self.max_seen = 0
        self._arrived.clear()
        self._admitted.clear()

    def _expire(self, now: float) -> None:
        for times in (self._arrived, self._admitted):
            while times and times[0] <= now - self.window:
                times.popleft()


def base_stats() -> dict[str, Any]:
    return {"requests": 0, "status": {}, "max_requests_in_window": 0}


# The vendor's handling, given the faults as they were when the request arrived.
Process = Callable[[Request, Faults], Awaitable[Reply]]


class BaseEmulator:
    """The request pipeline every emulator shares.

    Order, which tests depend on: dead (503), latency, `_admit` (the vendor's auth and
    limits, implemented by the subclass), injected 429, injected server error, then the
    vendor's handling. Request handlers run on uvicorn's event-loop thread while tests read
    state from theirs, so every mutation and read happens under one threading lock, held
    briefly and never across an await.
    """

    # Statuses an injected server error picks from; one entry keeps the random draws (and so
    # a seeded fault sequence) identical to an emulator that only ever sends 500.
    error_statuses: tuple[int, ...] = (500,)

    def __init__(self, faults: Faults | None = None, seed: int = 0) -> None:
        self.faults = faults or Faults()
        self.faults.validate()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = base_stats()

    # -- hooks for the vendor module ----------------------------------------------------------

    def _arrive(self, window: RateWindow) -> float | None:
        """Count a request in the vendor's window: the seconds to wait when it is over the
        limit, else None. Records the peak (and refusals, where the emulator counts them)."""
        with self._lock:
            wait = window.arrive(time.monotonic())
            self.stats["max_requests_in_window"] = window.max_seen
            if wait is not None and "rate_limited" in self.stats:
                self.stats["rate_limited"] += 1
        return wait

    def _clear(self) -> None:
        """Forget data and stats (caller holds the lock); subclasses extend it."""
        self.stats = base_stats()

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        """Authenticate and apply the vendor's limits; raise `Refused`, or return headers for
        the reply (rate-limit headers). Takes the lock itself where it touches state."""
        return {}

    def _fault_body(self, status: int) -> Any:
        """Body of an injected 503 / 5xx."""
        return {"error": "service unavailable" if status == 503 else "internal server error"}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return Refused(
            429,
            {"error": "rate limit exceeded"},
            {**headers, "Retry-After": seconds_header(faults.retry_after)},
        )

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared Python API --------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        known = {f.name for f in dataclasses.fields(Faults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        with self._lock:
            updated = dataclasses.replace(self.faults, **changes)
            updated.validate()
            self.faults = updated
            return dataclasses.replace(updated)

    def reset(self) -> None:
        """Forget data and stats; faults stay, since a test sets them on purpose."""
        with self._lock:
            self._clear()

    def stats_copy(self) -> dict[str, Any]:
        """The stats, copied; the caller holds the lock."""
        return copy.deepcopy(self.stats)

    # -- pipeline -----------------------------------------------------------------------------

    def endpoint(self, handler: Process) -> Callable[[Request], Awaitable[Response]]:
        """A Starlette endpoint that runs `handler` behind the shared gate (respond)."""

        async def endpoint(request: Request) -> Response:
            return await self.respond(request, handler)

        return endpoint

    async def respond(self, request: Request, process: Process) -> Response:
        """Run the shared gate, then `process`; count the status; build the HTTP response."""
        with self._lock:
            self.stats["requests"] += 1
            faults = self.faults
        gate_headers: dict[str, str] = {}
        try:
            gate_headers = await self._gate(request, faults)
            reply = await process(request, faults)
            status, body = reply.status, reply.body
            headers = {**gate_headers, **reply.headers}
        except Refused as refused:
            status, body = refused.status, refused.body
            headers = {**gate_headers, **refused.headers}
        with self._lock:
            counts = self.stats["status"]
            counts[str(status)] = counts.get(str(status), 0) + 1
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _gate(self, request: Request, faults: Faults) -> dict[str, str]:
        if faults.dead:
            raise Refused(503, self._fault_body(503))
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        headers = self._admit(request, faults)
        with self._lock:
            injected = faults.rate_429 and self._rng.random() < faults.rate_429
        if injected:
            raise self._injected_429(faults, headers)
        with self._lock:
            failed = faults.error_rate and self._rng.random() < faults.error_rate
            status = self.error_statuses[0]
            if failed and len(self.error_statuses) > 1:
                status = self._rng.choice(self.error_statuses)
        if failed:
            raise Refused(status, self._fault_body(status), headers)
        return headers


def admin_routes(emulator: BaseEmulator) -> list[BaseRoute]:
    """/_emulator/state, /_emulator/faults (partial update), /_emulator/reset and /healthz.

    They need no credentials: they belong to the test harness, not to the vendor's API.
    """

    async def state(request: Request) -> Response:
        return JSONResponse(emulator.state())

    async def faults(request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of Faults fields")
            current = emulator.set_faults(**changes)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(dataclasses.asdict(current))

    async def reset(request: Request) -> Response:
        emulator.reset()
        return JSONResponse({"ok": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return [
        Route("/_emulator/state", state, methods=["GET"]),
        Route("/_emulator/faults", faults, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]


def emulator_app(emulator: BaseEmulator, routes: list[BaseRoute]) -> Starlette:
    """A Starlette app serving the vendor `routes` plus the admin routes."""
    app = Starlette(routes=[*routes, *admin_routes(emulator)])
    app.state.emulator = emulator
    return app
