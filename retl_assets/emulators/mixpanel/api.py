"""Local emulator of Mixpanel's ingestion API (/import, /engage) and the service-account
`GET /api/app/me`, enforcing docs/vendor-contracts.md section 5.

What a client meets here, in order (common.py runs the first four):
1. faults.dead -> 503; faults.latency_ms; 2. the request window, when one is configured
   (`rate_limit`, for tests; Mixpanel publishes its limit in events and bytes, below);
3. injected 429s (Mixpanel's body, no Retry-After) and 500/502s;
4. the endpoint:
   - Bodies: JSON (an array; NDJSON for /import), or a form whose `data` field holds the JSON
     (one object or an array) beside `verbose`, `ip`, `api_key`: what Mixpanel's own Python
     library posts. Form fields count as query parameters.
   - /import: HTTP Basic, a service account (user:secret, with the right `project_id`), a
     project API secret as user name (the library's legacy `api_secret`) or a project token
     as user name, both with an empty password, else 401; over 10 MB uncompressed
     -> 413; over 2,000 events -> 400; then the project's rolling limits, about 30k events
     a second and 2 GB of JSON, both over a rolling minute -> 429; then every event is
     checked (`event`, `properties.time` from 1971 to an hour ahead, `distinct_id` not a
     placeholder, `$insert_id` of 1-36 letters, digits or "-", under 1 MB and 255
     properties). With
     strict=1 any failure answers 400 with `failed_records: [{index, $insert_id, field,
     message}]` while the valid events are imported; without it they are dropped silently.
     Events with the same (event, time, distinct_id, $insert_id) are one event. With
     verbose=1 (undocumented for /import, but what the library asks for and reads) a 200
     is `{status: 1 | 0, error}` as /engage answers it.
   - /engage: a JSON array of up to 2,000 updates; each carries the project `$token` (an
     unknown token answers 401, which Mixpanel documents but does not explain: unverified).
     Invalid updates are ignored; the answer is 200 with `1` (some update valid) or `0`,
     or with verbose=1 `{status, error}`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import time
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import parse_qs

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
from retl_assets.emulators.mixpanel.store import MixpanelProject, event_failure, update_failure

MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 2000
EVENTS_LIMIT = (1_800_000, 60.0)  # "~30k events per second", over a rolling minute
BYTES_PER_MINUTE = 2 * 1024 ** 3
RATE_MESSAGE = "Project exceeded rate limits. Please retry the request with exponential backoff."
FORM = "application/x-www-form-urlencoded"


class Payload(NamedTuple):
    """A request's JSON payload (uncompressed) and its parameters (query, then form fields)."""

    data: bytes
    params: dict[str, str]
    form: bool  # the payload came as a form's `data` field, which may hold one object


def _answer(code: int, status: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code}
    if error is not None:
        body["error"] = error
    return {**body, **extra, "status": status}


class MixpanelEmulator(BaseEmulator):
    """One Mixpanel project behind `build_mixpanel_app`.

    tokens: the project's tokens; None accepts any non-empty token.
    service_accounts: {user: secret} with access to the project; None accepts any pair.
    api_secrets: the project's API secrets (legacy /import auth, as Basic user name).
    project_id: the project's id, which a service account must name.
    events_limit: (events, seconds) of the rolling ingestion limit (Mixpanel: ~30k events a
        second over a rolling minute, so (1_800_000, 60.0)), over /import and /engage.
    bytes_per_minute: the other half of that limit, 2 GB of uncompressed JSON a minute.
    rate_limit: an extra (requests, seconds) window, for tests; without it the window only
        observes, over the events window, so max_requests_in_window is always meaningful.
    """

    error_statuses = (500, 502)

    def __init__(self, tokens: set[str] | None = None, *,
                 service_accounts: dict[str, str] | None = None, project_id: str = "1",
                 api_secrets: set[str] | None = None,
                 events_limit: tuple[int, float] = EVENTS_LIMIT,
                 bytes_per_minute: int = BYTES_PER_MINUTE,
                 rate_limit: tuple[int, float] | None = None,
                 faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(faults, seed)
        self.tokens = set(tokens or ())
        self.service_accounts = dict(service_accounts) if service_accounts is not None else None
        self.api_secrets = set(api_secrets or ())
        self.project_id = project_id
        self.events_limit = events_limit
        self.bytes_per_minute = bytes_per_minute
        limit, window = rate_limit if rate_limit is not None else (None, events_limit[1])
        self._window = RateWindow(limit, window)
        self.project = MixpanelProject()
        self._clear()

    def _clear(self) -> None:
        self.project.clear()
        self._window.clear()
        self._events: deque[tuple[float, int]] = deque()  # (arrival, events) in the window
        self._bytes: deque[tuple[float, int]] = deque()  # (arrival, bytes) in the last 60 s
        self.stats = {**base_stats(), "max_events_in_window": 0, "rate_limited": 0,
                      "contract_violations": []}

    # -- Python API for in-process tests ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"events": self.project.event_list(), "profiles": self.project.profile_map(),
                    "stats": {**self.stats_copy(), **self.project.counts}}

    def profiles(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self.project.profile_map()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return self.project.event_list()

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        wait = self._arrive(self._window)
        if wait is not None:
            raise self._limited()
        return {}

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return self._limited()

    def _limited(self) -> Refused:
        return Refused(429, _answer(429, "Too Many Requests", RATE_MESSAGE))

    def _fault_body(self, status: int) -> Any:
        return _answer(status, "Service Unavailable" if status == 503 else "Internal Server Error",
                       "service unavailable" if status == 503 else "internal server error")

    def _violation(self, reason: str) -> None:
        """A request a correct client never sends; the caller holds the lock."""
        self.stats["contract_violations"].append({"reason": reason})

    def _spend(self, events: int, size: int) -> None:
        """Count a request against the project's rolling limits, or refuse it with 429."""
        with self._lock:
            now = time.monotonic()
            for log, window in ((self._events, self.events_limit[1]), (self._bytes, 60.0)):
                while log and log[0][0] <= now - window:
                    log.popleft()
            in_window = sum(n for _, n in self._events) + events
            in_minute = sum(n for _, n in self._bytes) + size
            self.stats["max_events_in_window"] = max(self.stats["max_events_in_window"],
                                                     in_window)
            if in_window > self.events_limit[0] or in_minute > self.bytes_per_minute:
                self.stats["rate_limited"] += 1
                raise self._limited()
            self._events.append((now, events))
            self._bytes.append((now, size))

    # -- endpoints ----------------------------------------------------------------------------

    async def import_events(self, request: Request, faults: Faults) -> Reply:
        self._authenticate_import(request)
        payload = await _payload(request)
        data = payload.data
        if len(data) > MAX_REQUEST_BYTES:
            with self._lock:
                self._violation("request over 10 MB")
            raise Refused(413, _answer(413, "Request Entity Too Large",
                                       f"request exceeds max limit of {MAX_REQUEST_BYTES} bytes"))
        ndjson = "ndjson" in request.headers.get("content-type", "")
        events = _records(data, ndjson=ndjson, single=payload.form)
        if events is None:
            with self._lock:
                self._violation("body is neither a JSON array nor NDJSON")
            raise Refused(400, _answer(400, "Bad Request", "unable to parse the request body"))
        if len(events) > MAX_RECORDS:
            with self._lock:
                self._violation("more than 2000 events in one request")
            raise Refused(400, _answer(400, "Bad Request",
                                       f"too many events in one request: max {MAX_RECORDS}"))
        self._spend(len(events), len(data))
        strict = payload.params.get("strict") == "1"
        now = time.time()
        failed = []
        with self._lock:
            if not strict:
                self._violation("import without strict=1: invalid events vanish silently")
            for index, event in enumerate(events):
                problem = event_failure(event, faults, now)
                if problem is None:
                    self.project.import_event(event)
                    continue
                props = event.get("properties") if isinstance(event, dict) else None
                insert_id = props.get("$insert_id") if isinstance(props, dict) else None
                failed.append({"index": index, "$insert_id": insert_id, "field": problem[0],
                               "message": problem[1]})
        imported = len(events) - len(failed)
        if failed and strict:
            raise Refused(400, _answer(400, "Bad Request",
                                       "some data points in the request failed validation",
                                       num_records_imported=imported, failed_records=failed))
        return _imported(payload.params.get("verbose") == "1", imported, failed)

    async def engage(self, request: Request, faults: Faults) -> Reply:
        payload = await _payload(request)
        data = payload.data
        verbose = payload.params.get("verbose") == "1"
        updates = _records(data, ndjson=False, single=payload.form)
        if updates is None:
            with self._lock:
                self._violation("engage body is not a JSON array")
            return self._engaged(verbose, False, "data, missing or empty")
        tokens = {u.get("$token") for u in updates if isinstance(u, dict)}
        if self.tokens and any(isinstance(t, str) and t and t not in self.tokens for t in tokens):
            raise Refused(401, {"error": "Invalid project token", "status": "error"})
        if len(updates) > MAX_RECORDS:
            with self._lock:
                self._violation("more than 2000 updates in one request")
            return self._engaged(verbose, False, f"too many updates: max {MAX_RECORDS}")
        self._spend(len(updates), len(data))
        errors = []
        with self._lock:
            for update in updates:
                problem = update_failure(update, faults)
                if problem is None:
                    self.project.apply(update)
                else:
                    errors.append(problem)
            if errors and len(errors) < len(updates):
                # Mixpanel answers 1 and drops these: a client must never send them.
                self.project.counts["updates_ignored"] += len(errors)
                self._violation(f"{len(errors)} invalid update(s) dropped: {errors[0]}")
        valid = len(errors) < len(updates)
        return self._engaged(verbose, valid, None if valid else (errors or ["no updates"])[0])

    def _engaged(self, verbose: bool, ok: bool, error: str | None) -> Reply:
        if verbose:
            return Reply(200, {"status": 1 if ok else 0, "error": error})
        return Reply(200, 1 if ok else 0)

    async def me(self, request: Request, faults: Faults) -> Reply:
        user, secret = _basic(request.headers.get("authorization", ""))
        if not user or not secret or not self._account_ok(user, secret):
            raise Refused(401, {"error": "Invalid credentials", "status": "error"})
        return Reply(200, {"status": "ok", "results": {
            "user_name": user, "projects": {self.project_id: {"role": {"name": "Admin"}}}}})

    def _account_ok(self, user: str, secret: str) -> bool:
        return self.service_accounts is None or self.service_accounts.get(user) == secret

    def _authenticate_import(self, request: Request) -> None:
        user, secret = _basic(request.headers.get("authorization", ""))
        project_id = request.query_params.get("project_id")
        if user and secret:  # a service account must name a project it can reach
            ok = self._account_ok(user, secret) and project_id == self.project_id
        elif user in self.api_secrets:  # the secret names its project
            ok = True
        elif user:  # the project token, with or without project_id
            ok = (not self.tokens or user in self.tokens) and project_id in (None,
                                                                            self.project_id)
        else:
            ok = False
        if not ok:
            raise Refused(401, _answer(401, "Unauthorized", "Invalid credentials"))


def _imported(verbose: bool, imported: int, failed: list[dict[str, Any]]) -> Reply:
    """A 200 to /import; with verbose=1 in /engage's shape, which Mixpanel's library reads."""
    if not verbose:
        return Reply(200, _answer(200, "OK", num_records_imported=imported))
    ok = imported > 0 or not failed
    return Reply(200, {"status": 1 if ok else 0, "error": None if ok else failed[0]["message"]})


def _basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, _, secret = decoded.partition(":")
    return user or None, secret or None


async def _body(request: Request) -> bytes:
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError):
            raise Refused(400, _answer(400, "Bad Request", "invalid gzip body")) from None
    return raw


async def _payload(request: Request) -> Payload:
    """The JSON payload and parameters of a JSON body or of a form's `data` field."""
    raw = await _body(request)
    params = dict(request.query_params)
    if FORM not in request.headers.get("content-type", ""):
        return Payload(raw, params, form=False)
    fields = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"),
                                            keep_blank_values=True).items()}
    data = fields.pop("data", "")
    return Payload(data.encode(), {**params, **fields}, form=True)


def _records(data: bytes, *, ndjson: bool, single: bool) -> list[Any] | None:
    """The records of a JSON array (or NDJSON); `single`: one JSON object is one record, as
    Mixpanel takes it in a `data` parameter. None when the payload is neither."""
    try:
        if ndjson:
            return [json.loads(line) for line in data.splitlines() if line.strip()]
        parsed = json.loads(data)
    except ValueError:  # also UnicodeDecodeError
        return None
    if single and isinstance(parsed, dict):
        return [parsed]
    return parsed if isinstance(parsed, list) else None


def build_mixpanel_app(emulator: MixpanelEmulator) -> Starlette:
    """The HTTP face of `emulator`: Mixpanel's routes plus the admin routes (common.py)."""

    routes: list[BaseRoute] = [
        Route("/import", emulator.endpoint(emulator.import_events), methods=["POST"]),
        Route("/engage", emulator.endpoint(emulator.engage), methods=["POST"]),
        Route("/api/app/me", emulator.endpoint(emulator.me), methods=["GET"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate mixpanel` serves; a key "user:secret" is a service account,
    any other key a project token."""
    accounts = dict(k.split(":", 1) for k in keys or () if ":" in k)
    tokens = {k for k in keys or () if ":" not in k}
    return build_mixpanel_app(MixpanelEmulator(tokens or None,
                                               service_accounts=accounts or None,
                                               rate_limit=rate_limit, faults=faults))
