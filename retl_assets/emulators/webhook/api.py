"""A receiver of retl's signed webhook batches (the contract in destinations/webhook.py).

What a client meets here, in order (common.py runs the first three):
1. faults.dead -> 503; faults.latency_ms;
2. the receiver's rate limit, if given -> 429 with Retry-After;
3. injected 429s and 500s;
4. the required `headers`, then the signature `X-Retl-Signature: sha256=<hex HMAC-SHA256
   of the raw body>` keyed by one of `secrets`, else 401;
5. the envelope ({"batch": [...], "sent_at"}, at most `max_batch` items and `max_bytes`
   bytes), else 400/413;
6. each item: a repeated idempotency_key is acknowledged and not applied again; an upsert
   missing a `required` data field, or carrying the poison value, fails alone and is listed
   in a 207 `{"errors": [{"index", "idempotency_key", "message"}]}` (with
   `reject_invalid_batches` the whole batch is refused 422 and nothing is applied); the
   others are applied: upserts store `data` by `key`, deletes remove the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from retl_assets.emulators.common import (
    BaseEmulator,
    Faults,
    RateWindow,
    Refused,
    Reply,
    admin_routes,
    base_stats,
    seconds_header,
)

SIGNATURE_HEADER = "x-retl-signature"
OPERATIONS = ("upsert", "delete")


class WebhookEmulator(BaseEmulator):
    """An in-memory receiver: records by key, the idempotency keys it applied.

    secrets: keys the signature may be made with; None or empty accepts any well-formed
        signature (the header is still required).
    required: data fields every upsert must carry (non-null, non-empty).
    rate_limit: (requests, seconds), or None for no limit.
    error_key: how a failed item is named in `errors`: "index", "idempotency_key" or "both".
    headers: headers every request must carry with these values (the user's `headers`),
        else 401.
    """

    def __init__(
        self,
        secrets: set[str] | None = None,
        *,
        required: list[str] | None = None,
        rate_limit: tuple[int, float] | None = None,
        max_batch: int = 10_000,
        max_bytes: int = 4 * 1024 * 1024,
        error_key: str = "both",
        headers: dict[str, str] | None = None,
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        if error_key not in ("index", "idempotency_key", "both"):
            raise ValueError("error_key must be index, idempotency_key or both")
        super().__init__(faults, seed)
        self.secrets = set(secrets or ())
        self.required = list(required or [])
        self.rate_limit = rate_limit
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.error_key = error_key
        self.headers = dict(headers or {})
        self._window = RateWindow(*(rate_limit or (None, 1.0)))
        self._clear()

    def _clear(self) -> None:
        self._records: dict[str, Any] = {}
        self._applied: set[str] = set()
        self._window.clear()
        self.stats = {**base_stats(), "batches": 0, "items": 0, "upserted": 0, "deleted": 0,
                      "duplicates": 0, "item_errors": 0, "bad_signatures": 0,
                      "contract_violations": []}

    # -- Python API for in-process tests ------------------------------------------------------

    def records(self) -> dict[str, Any]:
        """{key: data} of what the receiver holds."""
        with self._lock:
            return json.loads(json.dumps(self._records))

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"records": json.loads(json.dumps(self._records)),
                    "stats": self.stats_copy()}

    # -- the shared pipeline's hooks ----------------------------------------------------------

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        wait = self._arrive(self._window)
        if wait is not None:
            raise Refused(429, {"error": "rate limit exceeded"},
                          {"Retry-After": seconds_header(wait)})
        return {}

    # -- the endpoint -------------------------------------------------------------------------

    async def receive(self, request: Request, faults: Faults) -> Reply:
        body = await request.body()
        missing = [h for h, v in self.headers.items() if request.headers.get(h) != v]
        if missing:
            raise Refused(401, {"error": f"header(s) missing or wrong: {', '.join(missing)}"})
        if not self._signed(body, request.headers.get(SIGNATURE_HEADER, "")):
            with self._lock:
                self.stats["bad_signatures"] += 1
            raise Refused(401, {"error": "signature does not match the body"})
        if len(body) > self.max_bytes:
            raise self._violation(413, f"body is {len(body)} bytes, over {self.max_bytes}")
        try:
            envelope = json.loads(body)
        except ValueError as exc:
            raise self._violation(400, f"body is not JSON: {exc}") from None
        batch = envelope.get("batch") if isinstance(envelope, dict) else None
        if not isinstance(batch, list) or not isinstance(envelope.get("sent_at"), str):
            raise self._violation(400, 'expected {"batch": [...], "sent_at": "..."}')
        if len(batch) > self.max_batch:
            raise self._violation(413, f"{len(batch)} items, over {self.max_batch}")
        for i, item in enumerate(batch):
            if reason := _malformed(item):
                raise self._violation(400, f"batch[{i}]: {reason}")
        errors = [(i, item, reason) for i, item in enumerate(batch)
                  if (reason := self._item_error(item, faults))]
        with self._lock:
            self.stats["batches"] += 1
            self.stats["items"] += len(batch)
            self.stats["item_errors"] += len(errors)
            listed = [self._listed(i, item, reason) for i, item, reason in errors]
            if errors and faults.reject_invalid_batches:
                raise Refused(422, {"errors": listed})
            failed = {i for i, _, _ in errors}
            for i, item in enumerate(batch):
                if i not in failed:
                    self._apply(item)
        if listed:
            return Reply(207, {"received": len(batch), "errors": listed})
        return Reply(200, {"received": len(batch)})

    def _signed(self, body: bytes, header: str) -> bool:
        scheme, _, digest = header.partition("=")
        if scheme != "sha256" or len(digest) != 64:
            return False
        if not self.secrets:
            return all(c in "0123456789abcdef" for c in digest)
        return any(hmac.compare_digest(
            digest, hmac.new(s.encode(), body, hashlib.sha256).hexdigest()) for s in self.secrets)

    def _item_error(self, item: dict[str, Any], faults: Faults) -> str | None:
        if faults.poisons(item):
            return f"refused: {faults.poison['path']} is poisoned"  # type: ignore[index]
        if item["operation"] != "upsert":
            return None
        data = item.get("data") or {}
        missing = [f for f in self.required if data.get(f) in (None, "")]
        return f"required field(s) missing: {', '.join(missing)}" if missing else None

    def _listed(self, index: int, item: dict[str, Any], message: str) -> dict[str, Any]:
        out: dict[str, Any] = {"message": message}
        if self.error_key in ("index", "both"):
            out["index"] = index
        if self.error_key in ("idempotency_key", "both"):
            out["idempotency_key"] = item["idempotency_key"]
        return out

    def _apply(self, item: dict[str, Any]) -> None:
        """Apply one valid item; the caller holds the lock."""
        if item["idempotency_key"] in self._applied:
            self.stats["duplicates"] += 1
            return
        self._applied.add(item["idempotency_key"])
        if item["operation"] == "upsert":
            self._records[item["key"]] = item.get("data") or {}
            self.stats["upserted"] += 1
        elif self._records.pop(item["key"], None) is not None:
            self.stats["deleted"] += 1

    def _violation(self, status: int, reason: str) -> Refused:
        with self._lock:
            self.stats["contract_violations"].append({"reason": reason})
        return Refused(status, {"error": reason})


def _malformed(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "item is not an object"
    for field in ("idempotency_key", "key"):
        if not isinstance(item.get(field), str) or not item[field]:
            return f"{field} must be a non-empty string"
    if item.get("operation") not in OPERATIONS:
        return f"operation must be one of {', '.join(OPERATIONS)}"
    if "data" in item and not isinstance(item["data"], dict):
        return "data must be an object"
    return None


def build_webhook_app(emulator: WebhookEmulator) -> Starlette:
    """Admin routes first (common.py), then a POST on any other path: a user's URL may
    carry a path of its own."""

    async def endpoint(request: Request) -> Response:
        return await emulator.respond(request, emulator.receive)

    routes = [*admin_routes(emulator), Route("/{path:path}", endpoint, methods=["POST"])]
    app = Starlette(routes=routes)
    app.state.emulator = emulator
    return app


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None):
    """The app `retl emulate webhook` serves; `keys` are the accepted signing secrets."""
    return build_webhook_app(WebhookEmulator(keys or None, rate_limit=rate_limit, faults=faults))
