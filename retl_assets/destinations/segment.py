"""The Segment-spec batch API, spoken by Customer.io Data Pipelines and Segment.

POST {base}/v1/batch {"batch": [...]} with HTTP Basic auth (write key as user name);
32 KB a message, 500 KB a request. The API answers a batch as a whole: 200 for all of it,
400 when it refuses it (we split to find the bad message), 401 for a bad key.
"""

from __future__ import annotations

import base64

import httpx

from retl_assets.destinations.base import Answer, Capabilities, Record
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.mapping import Rules

BASE_URLS = {"customerio": "https://cdp.customer.io", "segment": "https://api.segment.io"}
ACTIONS = ("identify", "track", "group", "page", "screen", "alias")
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


class SegmentDestination:
    def __init__(self, name: str, kind: str, write_key: str, base_url: str | None = None,
                 max_concurrency: int = 4, batch_size: int = 2500):
        self.name = name
        self.kind = kind
        self.base_url = (base_url or BASE_URLS[kind]).rstrip("/")
        # Keep the key only inside the header value; repr() of this object never shows it.
        self._auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.capabilities = Capabilities(
            actions=ACTIONS,
            records_per_request=min(batch_size, 2500),
            # Stay a little under the published limits: the envelope adds a few bytes.
            bytes_per_request=REQUEST_LIMIT - 1024,
            bytes_per_record=MESSAGE_LIMIT,
            max_concurrency=max_concurrency,
            rate_limit=(3000, 3.0) if kind == "customerio" else (1000, 1.0),
            default_retry_after_s=1.0,
            deduplicates=True,
            partial_failure="whole_batch",
        )

    def __repr__(self) -> str:
        return f"SegmentDestination({self.name!r}, {self.base_url!r})"

    def rules(self, action: str) -> Rules:
        return Rules(top_level=TOP_LEVEL, container=CONTAINER[action], as_string=ID_FIELDS)

    def envelope(self, action: str) -> dict[tuple[str, ...], str]:
        return {("type",): f"'{action}'"}

    def invalid_sql(self, action: str, payload: str) -> str:
        def present(field: str) -> str:
            return f"coalesce(json_extract_string({payload}, '$.{field}'), '') <> ''"

        checks = [(f"strlen({payload}) > {MESSAGE_LIMIT}",
                   f"'message is ' || strlen({payload}) || ' bytes, over the 32 KB limit'")]
        if action == "alias":
            checks += [(f"NOT {present('previousId')}", "'alias needs previousId'"),
                       (f"NOT {present('userId')}", "'alias needs userId'")]
        else:
            checks.append((f"NOT ({present('userId')} OR {present('anonymousId')})",
                           f"'{action} needs userId or anonymousId'"))
        if action == "track":
            checks.append((f"NOT {present('event')}", "'track needs event'"))
        if action == "group":
            checks.append((f"NOT {present('groupId')}", "'group needs groupId'"))
        whens = " ".join(f"WHEN {cond} THEN {reason}" for cond, reason in checks)
        return f"CASE {whens} ELSE NULL END"

    def request(self, client: httpx.AsyncClient, records: list[Record]) -> httpx.Request:
        body = ('{"batch":[' + ",".join(r.payload for r in records) + "]}").encode()
        return client.build_request(
            "POST", f"{self.base_url}/v1/batch", content=body,
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )

    def read(self, response: httpx.Response, records: list[Record]) -> Answer:
        status = response.status_code
        if 200 <= status < 300:
            return Answer("ok")
        error = f"HTTP {status}: {response.text[:300]}"
        if status in (401, 403):
            return Answer("auth", error=error)
        if status == 429:
            return Answer("retry", error=error,
                          retry_after=parse_retry_after(response.headers.get("Retry-After")))
        if status in (400, 413, 422):
            return Answer("refused", error=error)
        return Answer("retry", error=error)
