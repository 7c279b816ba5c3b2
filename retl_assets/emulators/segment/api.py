"""Local emulator of the Segment-spec tracking API (Segment, Customer.io Data Pipelines).

It enforces the contract in CONTRACTS.md ("Segment HTTP Tracking API and Customer.io Data
Pipelines") so that a client which breaks it is caught in tests, keeps what it accepted in
memory so tests can assert on the result, and injects faults (errors, 429s, latency, outages,
poison messages) so retry and back-off paths can be exercised.

Credentials are answered as the vendors answer them, not as a client might wish:
- Segment answers 200 to every request but a JSON error or an over-size one, so a wrong
  write key gets 200 and its messages are dropped (`strict_auth=True` answers 401 instead,
  for tests of a client's auth handling).
- Customer.io Data Pipelines is as permissive unless the request carries `X-Strict-Mode: 1`;
  then a wrong key is a 401 and an invalid message or an over-size request a 400.
- The key is the Basic user name; Customer.io also takes it as a Bearer token (its own
  library sends keys shaped `pk_us_...` / `sk_eu_...` that way).
Error bodies are `{code, message}`, which both vendors' Python libraries read.
"""

from __future__ import annotations

import base64
import binascii
import copy
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
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

Flavor = Literal["customerio", "segment"]

MAX_REQUEST_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024
SEGMENT_MAX_BATCH_MESSAGES = 2500
MAX_MESSAGE_ID_CHARS = 100  # messageId must be shorter than this
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")  # each has /v1/<type>
STRICT_VALUES = ("1", "true")  # X-Strict-Mode values that turn strict mode on


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An error body as the vendors' libraries read it: `payload["code"]`, `["message"]`."""
    return {"code": code, "message": message, **extra}


def _compact_size(message: Any) -> int:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _present(value: Any) -> bool:
    """A usable identifier: a non-empty string or a number (SDKs send numeric ids as-is)."""
    if isinstance(value, str):
        return value.strip() != ""
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        **base_stats(),
        "batches_accepted": 0,
        "messages_accepted": 0,
        "duplicates": 0,
        "unauthorized": 0,  # requests answered 200 and dropped for a wrong or missing key
        "contract_violations": [],
    }


class SegmentEmulator(BaseEmulator):
    """In-memory Segment / Customer.io Data Pipelines workspace behind `build_segment_app`."""

    def __init__(
        self,
        write_keys: set[str] | None = None,
        flavor: Flavor = "customerio",
        faults: Faults | None = None,
        seed: int = 0,
        rate_limit: tuple[int, float] | None = None,
        strict_auth: bool = False,
    ) -> None:
        if flavor not in ("customerio", "segment"):
            raise ValueError(f"flavor must be 'customerio' or 'segment', got {flavor!r}")
        if rate_limit is not None and (rate_limit[0] < 1 or rate_limit[1] <= 0):
            raise ValueError("rate_limit must be (max requests >= 1, window seconds > 0)")
        super().__init__(faults, seed)
        self.write_keys = set(write_keys or ())
        self.flavor: Flavor = flavor
        # A 401 for a wrong key where the vendor would answer 200 (see the module docstring).
        self.strict_auth = strict_auth
        self.rate_limit = rate_limit
        # Without a configured limit the window only observes, over one second (the unit of
        # Segment's published rate), so max_requests_in_window is always meaningful.
        limit, window = rate_limit if rate_limit is not None else (None, 1.0)
        self._window = RateWindow(limit, window)
        self._clear()

    def _clear(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.aliases: list[dict[str, Any]] = []
        self.seen_message_ids: set[str] = set()
        self.stats = _empty_stats()
        self._window.clear()

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
                "stats": self.stats_copy(),
            }

    # -- request pipeline ---------------------------------------------------------------------

    async def handle(self, request: Request, implied_type: str | None) -> Response:
        async def process(request: Request, faults: Faults) -> Reply:
            return Reply(200, await self._process(request, implied_type, faults))

        # Order is part of the contract: dead, latency, rate limit / 429, 500 (common.py),
        # then auth, size, content (below).
        return await self.respond(request, process)

    async def _process(
        self, request: Request, implied_type: str | None, faults: Faults
    ) -> dict[str, Any]:
        strict = self._strict(request)
        data, parsed, json_ok = _decode(await request.body(), request.headers)
        authorized = self._authorized(self._write_key(request, parsed))
        if not authorized and (strict or self.strict_auth):
            raise Refused(401, _error("unauthorized", "invalid or missing write key"))
        if not self._readable(data, json_ok, strict):
            return self._success()  # Customer.io answers 200 and silently drops the request
        if not authorized:
            # The vendor answers 200 and drops it; only its own logs tell why.
            with self._lock:
                self.stats["unauthorized"] += 1
            return self._success()
        messages = self._messages(parsed, implied_type)
        self._apply(messages, faults, reject=strict or faults.reject_invalid_batches)
        return self._success()

    def _readable(self, data: bytes | None, json_ok: bool, strict: bool) -> bool:
        """Refuse a body that is not gzip or JSON (400); False for an over-size one that
        Customer.io drops quietly (Segment, and Customer.io in strict mode, answer 400)."""
        if data is None:
            self._violation("body is not valid gzip", None)
            raise Refused(400, _error("invalid_request", "invalid gzip body"))
        if len(data) > MAX_REQUEST_BYTES:
            self._violation("request larger than 500 KB", None)
            if self.flavor == "segment" or strict:
                raise Refused(400, _error("payload_too_large", "batch too large"))
            return False
        if not json_ok:
            self._violation("invalid JSON", None)
            raise Refused(400, _error("invalid_json", "invalid JSON"))
        return True

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        # Segment checks the key after reading the body (it may be in it), so only the rate
        # limit runs here, ahead of the injected faults as it always has.
        wait = self._arrive(self._window)
        if wait is not None:
            raise Refused(429, _error("rate_limited", "rate limit exceeded"), self._retry(wait))
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return Refused(429, _error("rate_limited", "rate limit exceeded"),
                       self._retry(faults.retry_after))

    def _fault_body(self, status: int) -> Any:
        if status == 503:
            return _error("service_unavailable", "service unavailable")
        return _error("internal_error", "internal server error")

    def _retry(self, seconds: float) -> dict[str, str]:
        headers = {"Retry-After": seconds_header(seconds)}
        if self.flavor == "segment":
            headers["X-RateLimit-Reset"] = headers["Retry-After"]  # Segment documents both
        return headers

    def _strict(self, request: Request) -> bool:
        """Customer.io's strict mode; Segment has none."""
        value = request.headers.get("x-strict-mode", "").strip().lower()
        return self.flavor == "customerio" and value in STRICT_VALUES

    def _write_key(self, request: Request, parsed: Any) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = None
        if scheme.lower() == "basic":
            key = _basic_user(token)
        elif scheme.lower() == "bearer" and self.flavor == "customerio":
            key = token.strip() or None  # how Customer.io's library sends pk_/sk_ keys
        if key is None and self.flavor == "segment" and isinstance(parsed, dict):
            body_key = parsed.get("writeKey")  # Segment documents writeKey in the body too
            key = body_key if isinstance(body_key, str) else None
        return key

    def _authorized(self, key: str | None) -> bool:
        return bool(key) and (not self.write_keys or key in self.write_keys)

    def _messages(self, parsed: Any, implied_type: str | None) -> list[Any]:
        if not isinstance(parsed, dict):
            self._violation("body is not a JSON object", None)
            raise Refused(400, _error("invalid_request", "body must be a JSON object"))
        if implied_type is not None:
            return [{**parsed, "type": implied_type}]
        batch = parsed.get("batch")
        if not isinstance(batch, list):
            self._violation("batch is not a list", None)
            raise Refused(400, _error("invalid_request", "batch must be a list of messages"))
        if self.flavor == "segment" and len(batch) > SEGMENT_MAX_BATCH_MESSAGES:
            self._violation("more than 2500 messages in a batch", None)
            raise Refused(400, _error("invalid_request", "too many messages in batch"))
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

    def _apply(self, messages: list[Any], faults: Faults, reject: bool) -> None:
        """Store the valid messages; `reject`: refuse the whole batch for an invalid one
        (strict mode, or the reject_invalid_batches fault) instead of dropping that one."""
        # First pass decides the whole batch before anything is stored.
        problems: list[tuple[int, str]] = []
        for index, message in enumerate(messages):
            if faults.poisons(message):
                raise Refused(400, _error("invalid_request", "message refused by the destination",
                                          index=index, messageId=_message_id(message)))
            reason = _contract_error(message)
            if reason is None:
                continue
            if reject:
                self._violation(reason, _message_id(message))
                raise Refused(400, _error("invalid_request", reason, index=index,
                                          messageId=_message_id(message)))
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


def _decode(raw: bytes, headers: Any) -> tuple[bytes | None, Any, bool]:
    """(body after gzip or None when it is not gzip, parsed JSON, whether it parsed)."""
    data: bytes | None = raw
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError):
            data = None
    if data is None:
        return None, None, False
    try:
        return data, json.loads(data), True
    except ValueError:  # also covers UnicodeDecodeError
        return data, None, False


def _basic_user(token: str) -> str | None:
    """The write key from the credentials of `Basic base64(key:)`; None when not of that form."""
    if not token.strip():
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

    routes: list[BaseRoute] = [Route("/v1/batch", api(None), methods=["POST"])]
    routes += [Route(f"/v1/{kind}", api(kind), methods=["POST"]) for kind in MESSAGE_TYPES]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate customerio|segment` serves."""
    return build_segment_app(SegmentEmulator(write_keys=keys or None, flavor=kind,
                                             faults=faults, rate_limit=rate_limit))
