"""Local emulator of the Segment-spec tracking API (Segment, Customer.io Data Pipelines).

It enforces the contract in CONTRACTS.md ("Segment HTTP Tracking API and Customer.io Data
Pipelines") so that a client which breaks it is caught in tests, keeps what it accepted in
memory so tests can assert on the result, and injects faults (errors, 429s, latency, outages,
poison messages) so retry and back-off paths can be exercised.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import dataclasses
import gzip
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Flavor = Literal["customerio", "segment"]

MAX_REQUEST_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024
SEGMENT_MAX_BATCH_MESSAGES = 2500
MAX_MESSAGE_ID_CHARS = 100  # messageId must be shorter than this
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")  # each has /v1/<type>


@dataclass
class Faults:
    """Faults injected in front of the contract checks; all off by default."""

    error_rate: float = 0  # fraction of requests answered 500
    rate_429: float = 0  # fraction of requests answered 429 with Retry-After
    retry_after: float = 1  # seconds sent in Retry-After on injected 429s
    latency_ms: float = 0  # added to every API request
    dead: bool = False  # answer 503 to every API request
    poison: dict[str, Any] | None = None  # {"path": "traits.email", "value": x}: refuse the batch
    reject_invalid_batches: bool = False  # refuse a whole batch for one invalid message

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


class _Refused(Exception):
    """A request answered with an error before anything in it was applied."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body.get("error"))
        self.status = status
        self.body = body
        self.headers = headers or {}


def _seconds(value: float) -> str:
    """Retry-After as a plain number: "1", "0.05" (fractional values keep tests fast)."""
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _compact_size(message: Any) -> int:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _present(value: Any) -> bool:
    """A usable identifier: a non-empty string or a number (SDKs send numeric ids as-is)."""
    if isinstance(value, str):
        return value.strip() != ""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lookup(message: Any, dotted: str) -> tuple[bool, Any]:
    node = message
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _contract_error(message: Any) -> str | None:
    """Why `message` breaks the contract, or None when it is valid."""
    if not isinstance(message, dict):
        return "message is not a JSON object"
    if _compact_size(message) > MAX_MESSAGE_BYTES:
        return "message larger than 32 KB"
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        return f"invalid type {kind!r}"
    message_id = message.get("messageId")
    if message_id is not None and not (
        isinstance(message_id, str) and len(message_id) < MAX_MESSAGE_ID_CHARS
    ):
        return "messageId must be a string shorter than 100 characters"
    if kind == "alias":
        if not (_present(message.get("previousId")) and _present(message.get("userId"))):
            return "alias needs previousId and userId"
        return None
    if not (_present(message.get("userId")) or _present(message.get("anonymousId"))):
        return f"{kind} needs userId or anonymousId"
    if kind == "track" and not (isinstance(message.get("event"), str) and message["event"]):
        return "track needs a non-empty event"
    if kind == "group" and not _present(message.get("groupId")):
        return "group needs groupId"
    return None


def _empty_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "batches_accepted": 0,
        "messages_accepted": 0,
        "duplicates": 0,
        "status": {},
        "contract_violations": [],
    }


class SegmentEmulator:
    """In-memory Segment / Customer.io Data Pipelines workspace behind `build_segment_app`.

    Request handlers run on uvicorn's event loop thread while tests read state from theirs,
    so every mutation and read happens under one threading lock (held briefly, never across
    an await).
    """

    def __init__(
        self,
        write_keys: set[str] | None = None,
        flavor: Flavor = "customerio",
        faults: Faults | None = None,
        seed: int = 0,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        if flavor not in ("customerio", "segment"):
            raise ValueError(f"flavor must be 'customerio' or 'segment', got {flavor!r}")
        if rate_limit is not None and (rate_limit[0] < 1 or rate_limit[1] <= 0):
            raise ValueError("rate_limit must be (max requests >= 1, window seconds > 0)")
        self.write_keys = set(write_keys or ())
        self.flavor: Flavor = flavor
        self.faults = faults or Faults()
        self.faults.validate()
        self.rate_limit = rate_limit
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._admitted: deque[float] = deque()  # monotonic times of requests inside the window
        self._clear()

    def _clear(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.aliases: list[dict[str, Any]] = []
        self.seen_message_ids: set[str] = set()
        self.stats: dict[str, Any] = _empty_stats()
        self._admitted.clear()

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "profiles": copy.deepcopy(self.profiles),
                "groups": {
                    gid: {"traits": copy.deepcopy(g["traits"]), "members": sorted(g["members"])}
                    for gid, g in self.groups.items()
                },
                "events": copy.deepcopy(self.events),
                "aliases": copy.deepcopy(self.aliases),
                "stats": copy.deepcopy(self.stats),
            }

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

    # -- request pipeline ---------------------------------------------------------------------

    async def handle(self, request: Request, implied_type: str | None) -> Response:
        with self._lock:
            self.stats["requests"] += 1
            faults = self.faults
        try:
            body = await self._process(request, implied_type, faults)
            status, headers = 200, {}
        except _Refused as refused:
            body, status, headers = refused.body, refused.status, refused.headers
        with self._lock:
            counts = self.stats["status"]
            counts[str(status)] = counts.get(str(status), 0) + 1
        return JSONResponse(body, status_code=status, headers=headers)

    async def _process(
        self, request: Request, implied_type: str | None, faults: Faults
    ) -> dict[str, Any]:
        # Order is part of the contract: dead, latency, rate limit / 429, 500, auth, size, content.
        if faults.dead:
            raise _Refused(503, {"error": "service unavailable"})
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        self._throttle(faults)
        with self._lock:
            failed = faults.error_rate and self._rng.random() < faults.error_rate
        if failed:
            raise _Refused(500, {"error": "internal server error"})

        raw = await request.body()
        data: bytes | None = raw
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                data = gzip.decompress(raw)
            except (OSError, EOFError):
                data = None
        parsed, json_ok = None, False
        if data is not None:
            try:
                parsed, json_ok = json.loads(data), True
            except ValueError:  # also covers UnicodeDecodeError; checked after auth, below
                pass

        self._authenticate(request, parsed)

        if data is None:
            self._violation("body is not valid gzip", None)
            raise _Refused(400, {"error": "invalid gzip body"})
        if len(data) > MAX_REQUEST_BYTES:
            self._violation("request larger than 500 KB", None)
            if self.flavor == "segment":
                raise _Refused(400, {"error": "batch too large"})
            return self._success()  # Customer.io answers 200 and silently drops the request
        if not json_ok:
            self._violation("invalid JSON", None)
            raise _Refused(400, {"error": "invalid JSON"})
        messages = self._messages(parsed, implied_type)
        self._apply(messages, faults)
        return self._success()

    def _throttle(self, faults: Faults) -> None:
        with self._lock:
            if self.rate_limit is not None:
                limit, window = self.rate_limit
                now = time.monotonic()
                while self._admitted and self._admitted[0] <= now - window:
                    self._admitted.popleft()
                if len(self._admitted) >= limit:
                    wait = self._admitted[0] + window - now
                    wait = max(math.ceil(wait * 1000) / 1000, 0.001)
                    raise _Refused(429, {"error": "rate limit exceeded"}, self._retry(wait))
                self._admitted.append(now)
            injected = faults.rate_429 and self._rng.random() < faults.rate_429
        if injected:
            raise _Refused(429, {"error": "rate limit exceeded"}, self._retry(faults.retry_after))

    def _retry(self, seconds: float) -> dict[str, str]:
        headers = {"Retry-After": _seconds(seconds)}
        if self.flavor == "segment":
            headers["X-RateLimit-Reset"] = headers["Retry-After"]  # Segment documents both
        return headers

    def _authenticate(self, request: Request, parsed: Any) -> None:
        key = _basic_user(request.headers.get("authorization", ""))
        if key is None and self.flavor == "segment" and isinstance(parsed, dict):
            body_key = parsed.get("writeKey")  # Segment documents writeKey in the body too
            key = body_key if isinstance(body_key, str) else None
        if not key or (self.write_keys and key not in self.write_keys):
            raise _Refused(401, {"error": "Unauthorized: invalid write key"})

    def _messages(self, parsed: Any, implied_type: str | None) -> list[Any]:
        if not isinstance(parsed, dict):
            self._violation("body is not a JSON object", None)
            raise _Refused(400, {"error": "body must be a JSON object"})
        if implied_type is not None:
            return [{**parsed, "type": implied_type}]
        batch = parsed.get("batch")
        if not isinstance(batch, list):
            self._violation("batch is not a list", None)
            raise _Refused(400, {"error": "batch must be a list of messages"})
        if self.flavor == "segment" and len(batch) > SEGMENT_MAX_BATCH_MESSAGES:
            self._violation("more than 2500 messages in a batch", None)
            raise _Refused(400, {"error": "too many messages in batch"})
        shared = parsed.get("context")
        if isinstance(shared, dict):
            # Batch-level context is a default; each message's own context wins.
            batch = [
                {**m, "context": {**shared, **(m.get("context") or {})}}
                if isinstance(m, dict) and isinstance(m.get("context", {}), dict)
                else m
                for m in batch
            ]
        return batch

    def _apply(self, messages: list[Any], faults: Faults) -> None:
        # First pass decides the whole batch before anything is stored.
        problems: list[tuple[int, str]] = []
        for index, message in enumerate(messages):
            if faults.poison is not None:
                found, value = _lookup(message, faults.poison["path"])
                if found and value == faults.poison["value"]:
                    raise _Refused(
                        400,
                        {
                            "error": "message refused by the destination",
                            "index": index,
                            "messageId": _message_id(message),
                        },
                    )
            reason = _contract_error(message)
            if reason is None:
                continue
            if faults.reject_invalid_batches:
                self._violation(reason, _message_id(message))
                raise _Refused(
                    400, {"error": reason, "index": index, "messageId": _message_id(message)}
                )
            problems.append((index, reason))

        dropped = {index for index, _ in problems}
        with self._lock:
            for index, reason in problems:
                self._record_violation(reason, _message_id(messages[index]))
            for index, message in enumerate(messages):
                if index not in dropped:
                    self._store(message)
            self.stats["batches_accepted"] += 1

    def _store(self, message: dict[str, Any]) -> None:
        """Apply one valid message; the caller holds the lock."""
        message_id = message.get("messageId")
        if message_id is not None:
            if message_id in self.seen_message_ids:
                self.stats["duplicates"] += 1
                return
            self.seen_message_ids.add(message_id)
        message = {k: v for k, v in message.items() if k != "writeKey"}  # never keep secrets
        kind = message["type"]
        who = message.get("userId")
        who = str(who if _present(who) else message.get("anonymousId"))
        if kind == "identify":
            traits = message.get("traits")
            self.profiles.setdefault(who, {}).update(traits if isinstance(traits, dict) else {})
        elif kind == "group":
            group = self.groups.setdefault(
                str(message["groupId"]), {"traits": {}, "members": set()}
            )
            traits = message.get("traits")
            group["traits"].update(traits if isinstance(traits, dict) else {})
            group["members"].add(who)
        elif kind == "alias":
            self.aliases.append({"previousId": message["previousId"], "userId": message["userId"]})
        else:
            self.events.append(copy.deepcopy(message))
        self.stats["messages_accepted"] += 1

    def _violation(self, reason: str, message_id: Any) -> None:
        with self._lock:
            self._record_violation(reason, message_id)

    def _record_violation(self, reason: str, message_id: Any) -> None:
        self.stats["contract_violations"].append({"reason": reason, "messageId": message_id})

    def _success(self) -> dict[str, Any]:
        return {"success": True} if self.flavor == "segment" else {}


def _message_id(message: Any) -> Any:
    return message.get("messageId") if isinstance(message, dict) else None


def _basic_user(header: str) -> str | None:
    """The write key from `Basic base64(key:)`; None when absent or not of that form."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user if user and not password else None


def build_segment_app(emulator: SegmentEmulator) -> Starlette:
    """The HTTP face of `emulator`: vendor routes under /v1, admin routes under /_emulator."""

    def api(implied_type: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await emulator.handle(request, implied_type)

        return endpoint

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

    routes = [Route("/v1/batch", api(None), methods=["POST"])]
    routes += [Route(f"/v1/{kind}", api(kind), methods=["POST"]) for kind in MESSAGE_TYPES]
    routes += [
        Route("/_emulator/state", state, methods=["GET"]),
        Route("/_emulator/faults", faults, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = emulator
    return app
