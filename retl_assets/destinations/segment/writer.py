"""The Segment-spec batch API, spoken by Customer.io Data Pipelines and Segment.

POST {base}/v1/batch {"batch": [...]} with HTTP Basic auth (write key as user name);
32 KB a message, 500 KB a request. The API answers a batch as a whole: 200 for all of it,
400 when it refuses it (the engine splits to find the bad message).

Neither vendor refuses a bad key by default: Segment answers 200 to everything but JSON and
size errors, and Customer.io answers 200 and only logs the error. retl sends Customer.io
`X-Strict-Mode: 1`, which makes a bad key a 401 and a bad message a 400; Segment has no such
mode, so a wrong Segment write key cannot be detected (test-connection says so).
"""

from __future__ import annotations

import base64
import re

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    Record,
    blank,
    first_problem,
    json_batch,
    json_body,
    raise_for_status,
)
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.destinations.segment.config import SegmentConfig
from retl_assets.mapping import Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import SyncConfig
from retl_assets.state.store import MSGID

BASE_URLS = {"customerio": "https://cdp.customer.io", "segment": "https://api.segment.io"}
CUSTOMERIO_EU = "https://cdp-eu.customer.io"
# Customer.io API keys name their region; its own library sends them as a Bearer token.
REGION_KEY = re.compile(r"(?:pk|sk)_(us|eu)_")
CALLS = ("identify", "track", "group", "page", "screen", "alias")
ACTIONS = {"customerio": CALLS, "segment": CALLS}
TOP_LEVEL = frozenset({
    "userId", "anonymousId", "event", "name", "groupId", "previousId", "timestamp",
    "context", "integrations", "category", "messageId", "sentAt", "originalTimestamp",
    "traits", "properties",
})
ID_FIELDS = frozenset({"userId", "anonymousId", "groupId", "previousId"})
CONTAINER = {"identify": "traits", "group": "traits", "track": "properties",
             "page": "properties", "screen": "properties", "alias": None}
MESSAGE_LIMIT = 32 * 1024
REQUEST_LIMIT = 500 * 1024
MAX_BATCH = 2500


class SegmentDestination:
    def __init__(self, name: str, kind: str, write_key: str, base_url: str | None = None,
                 max_concurrency: int | None = None, batch_size: int | None = None):
        self.name = name
        self.kind = kind
        region_key = REGION_KEY.match(write_key) if kind == "customerio" else None
        default_url = CUSTOMERIO_EU if region_key and region_key.group(1) == "eu" \
            else BASE_URLS[kind]
        self.base_url = (base_url or default_url).rstrip("/")
        # The key lives only inside the header value; repr() never shows it.
        self._headers = {"Authorization": f"Bearer {write_key}" if region_key else
                         "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}
        if kind == "customerio":
            self._headers["X-Strict-Mode"] = "1"  # else a bad key or message gets a 200
        self.capabilities = Capabilities(
            records_per_request=min(batch_size or MAX_BATCH, MAX_BATCH),
            # A little under the published limits: the envelope adds a few bytes.
            bytes_per_request=REQUEST_LIMIT - 1024,
            bytes_per_record=MESSAGE_LIMIT,
            max_concurrency=max_concurrency or 4,
            rate_limit=(3000, 3.0) if kind == "customerio" else (1000, 1.0),
            deduplicates=True,
        )

    def __repr__(self) -> str:
        return f"SegmentDestination({self.name!r}, {self.base_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> SegmentWriter:
        return SegmentWriter(self, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        # The tracking API has no read call; an empty batch checks the key and sends nothing.
        return client.build_request("POST", f"{self.base_url}/v1/batch", json={"batch": []},
                                    headers=self._headers)

    def check_answer(self, response: httpx.Response) -> tuple[bool, str] | None:
        if self.kind == "segment" and response.is_success:
            return True, (f"{self.base_url} answered, but Segment accepts any write key (it "
                          f"answers 200 and drops the events of a wrong one), so the key cannot "
                          f"be confirmed; look for a test event in the source's debugger")
        return None

    def post(self, client: httpx.AsyncClient, records: list[Record]) -> httpx.Request:
        return client.build_request(
            "POST", f"{self.base_url}/v1/batch", content=json_batch(records, "batch"),
            headers={**self._headers, "Content-Type": "application/json"},
        )


class SegmentWriter:
    def __init__(self, dest: SegmentDestination, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync

    def operations(self) -> dict[str, str]:
        return {change: self._sync.action for change in self._sync.selects}

    def rules(self, operation: str) -> Rules:
        return Rules(top_level=TOP_LEVEL, container=CONTAINER[operation], as_string=ID_FIELDS)

    def payload(self, operation: str, mapped: Tree) -> Tree:
        tree = dict(mapped)
        if self._sync.mapping is None:
            # Mapping by name: retl owns the call type and the idempotency key.
            tree = {p: e for p, e in tree.items() if p[-1] not in ("type", "messageId")}
        tree[("type",)] = Raw(f"'{operation}'")
        tree.setdefault(("messageId",), Raw(MSGID))
        return tree

    def needs_dest_id(self, operation: str) -> bool:
        return False

    def invalid_sql(self, operation: str, payload: str) -> str:
        def present(field: str) -> str:
            return f"NOT {blank(payload, f'$.{field}')}"

        checks = [(f"strlen({payload}) > {MESSAGE_LIMIT}",
                   f"'message is ' || strlen({payload}) || ' bytes, over the 32 KB limit'")]
        if operation == "alias":
            checks += [(f"NOT {present('previousId')}", "'alias needs previousId'"),
                       (f"NOT {present('userId')}", "'alias needs userId'")]
        else:
            checks.append((f"NOT ({present('userId')} OR {present('anonymousId')})",
                           f"'{operation} needs userId or anonymousId'"))
        if operation == "track":
            checks.append((f"NOT {present('event')}", "'track needs event'"))
        if operation == "group":
            checks.append((f"NOT {present('groupId')}", "'group needs groupId'"))
        return first_problem(checks)

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        return self._dest.post(client, records)

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        if not response.is_success:
            raise_for_status(response, parse_retry_after(response.headers.get("Retry-After")),
                             _vendor_error(response))
        return Answer()


def _vendor_error(response: httpx.Response) -> str | None:
    """The error as both vendors word it, `{code, message}`; None for another body."""
    body = json_body(response)
    if not isinstance(body.get("message"), str):
        return None
    code = f" {body['code']}" if body.get("code") else ""
    return f"HTTP {response.status_code}{code}: {body['message'][:300]}"


def connect(name: str, config: SegmentConfig) -> SegmentDestination:
    key = resolve_secret(config.write_key, f"destinations.{name}.write_key")
    return SegmentDestination(name, config.type, key or "", config.base_url,
                              config.max_concurrency, config.batch_size)
