"""A generic signed webhook: JSON batches POSTed to any HTTPS endpoint the user runs.

    POST <url>
    X-Retl-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed by `secret`>
    {"batch": [{"idempotency_key", "operation": "upsert" | "delete", "key", "data"}],
     "sent_at": "<ISO 8601>"}

The contract is ours, so it is written down here for whoever builds the receiver:
- 2xx: every item delivered, except those a 200/207 body lists in
  `{"errors": [{"index" | "idempotency_key", "message"}]}`;
- 401/403: the receiver refused the signature or the headers: the run stops;
- 429: slow down (Retry-After, seconds or an HTTP date, is honoured); 408 and 5xx: retried;
- any other 4xx: the batch is refused whole, and retl halves it to isolate the bad item.
The receiver should drop an `idempotency_key` it has already applied: retries resend it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import httpx

from retl_assets.destinations.base import Answer, Capabilities, Record, raise_for_status
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.destinations.webhook.config import (
    DEFAULT_REQUEST_BYTES,
    SIGNATURE_HEADER,
    WebhookConfig,
)
from retl_assets.errors import RefusedRequest
from retl_assets.mapping import Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.store import KEYTEXT, MSGID

ACTIONS = {"webhook": ("send", MIRROR)}
DEFAULT_BATCH = 100
MAX_BATCH = 10_000
ENVELOPE_BYTES = 256  # {"batch":[...],"sent_at":"..."} around the items
def signature(secret: str, body: bytes) -> str:
    """The X-Retl-Signature value of `body`: what a receiver recomputes and compares."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDestination:
    def __init__(self, name: str, url: str, secret: str, headers: dict[str, str] | None = None,
                 max_request_bytes: int = DEFAULT_REQUEST_BYTES,
                 max_concurrency: int | None = None, batch_size: int | None = None):
        self.name = name
        self.url = url
        self._secret = secret
        self._headers = {**(headers or {}), "Content-Type": "application/json",
                         "User-Agent": "retl-webhook"}
        self.capabilities = Capabilities(
            records_per_request=min(batch_size or DEFAULT_BATCH, MAX_BATCH),
            bytes_per_request=max_request_bytes - ENVELOPE_BYTES,
            bytes_per_record=max_request_bytes - ENVELOPE_BYTES,
            max_concurrency=max_concurrency or 4,
            rate_limit=None,  # the receiver's own, if any: the project's `rate_limit: "N/S"`
            deduplicates=True,  # by contract: receivers drop a repeated idempotency_key
        )

    def __repr__(self) -> str:
        return f"WebhookDestination({self.name!r}, {self.url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> WebhookWriter:
        return WebhookWriter(self, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        # A webhook has no read call: an empty, signed batch checks the URL, the secret and
        # the headers, and delivers nothing.
        return self.post(client, [])

    def post(self, client: httpx.Client | httpx.AsyncClient,
             records: list[Record]) -> httpx.Request:
        sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = ('{"batch":[' + ",".join(r.payload for r in records)
                + f'],"sent_at":"{sent_at}"}}').encode()
        headers = {**self._headers, SIGNATURE_HEADER: signature(self._secret, body)}
        return client.build_request("POST", self.url, content=body, headers=headers)


class WebhookWriter:
    def __init__(self, dest: WebhookDestination, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync
        self._mirror = sync.action == MIRROR

    def operations(self) -> dict[str, str]:
        return {change: "delete" if change == "deleted" else "upsert"
                for change in self._sync.selects}

    def rules(self, operation: str) -> Rules:
        # Every mapped field goes under `data`; the envelope is retl's own.
        return Rules(top_level=frozenset(), container="data")

    def payload(self, operation: str, mapped: Tree) -> Tree:
        return {("idempotency_key",): Raw(MSGID), ("operation",): Literal(operation),
                ("key",): Raw(KEYTEXT), **mapped}

    def needs_dest_id(self, operation: str) -> bool:
        # A mirror deletes only what it delivered: retl keeps the key as the receiver's id.
        return self._mirror and operation == "delete"

    def invalid_sql(self, operation: str, payload: str) -> str:
        limit = self.capabilities.bytes_per_record
        return (f"CASE WHEN strlen({payload}) > {limit} THEN 'item is ' || strlen({payload}) "
                f"|| ' bytes, over max_request_bytes' ELSE NULL END")

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        return self._dest.post(client, records)

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        status = response.status_code
        if 400 <= status < 500 and status not in (401, 403, 408, 429):
            # By our contract any other 4xx refuses the batch whole: retl halves it.
            raise RefusedRequest(f"HTTP {status}: {response.text[:300]}", status=status)
        # 401/403 stop the run, 429 waits for Retry-After, 408, 5xx (and a 1xx/3xx, not an
        # answer we understand) are sent again.
        raise_for_status(response, parse_retry_after(response.headers.get("Retry-After")))
        answer = _item_errors(response, records)
        if self._mirror and operation == "upsert":
            answer.ids = {i: r.key for i, r in enumerate(records) if i not in answer.rejected}
        return answer


def _item_errors(response: httpx.Response, records: list[Record]) -> Answer:
    """The body's `errors`, each naming its item by index or idempotency key; one that names
    no item of the batch is kept as unplaced."""
    answer = Answer()
    try:
        body = response.json()
    except ValueError:
        return answer
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return answer
    by_key = {r.msgid: i for i, r in enumerate(records)}
    for item in errors:
        message = item.get("message") if isinstance(item, dict) else item
        message = message if isinstance(message, str) else json.dumps(message)
        index = item.get("index") if isinstance(item, dict) else None
        if not (isinstance(index, int) and 0 <= index < len(records)):
            index = by_key.get(str(item.get("idempotency_key"))) if isinstance(item, dict) \
                else None
        if index is None:
            answer.unplaced.append(message)
        else:
            answer.rejected[index] = message
    return answer


def connect(name: str, config: WebhookConfig) -> WebhookDestination:
    where = f"destinations.{name}"
    secret = resolve_secret(config.secret, f"{where}.secret") or ""
    headers = {header: resolve_secret(value, f"{where}.headers.{header}") or ""
               for header, value in config.headers.items()}
    return WebhookDestination(name, config.url, secret, headers, config.max_request_bytes,
                              config.max_concurrency, config.batch_size)
