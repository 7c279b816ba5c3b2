"""What a destination declares (capabilities, as data) and what a request's answer means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

from retl_assets.mapping import Rules


@dataclass(frozen=True)
class Capabilities:
    actions: tuple[str, ...]
    records_per_request: int
    bytes_per_request: int
    bytes_per_record: int
    max_concurrency: int = 4
    rate_limit: tuple[int, float] | None = None  # (requests, per seconds)
    default_retry_after_s: float = 1.0  # when a 429 carries no Retry-After
    deduplicates: bool = False  # drops a resent idempotency key
    partial_failure: Literal["per_item", "whole_batch"] = "whole_batch"


@dataclass(frozen=True)
class Record:
    msgid: str
    key: str  # the primary key as text, for the ledger and error tables
    payload: str  # JSON text


@dataclass
class Answer:
    """How one request went, in terms the engine acts on."""

    kind: Literal["ok", "retry", "refused", "auth"]
    error: str | None = None
    retry_after: float | None = None  # seconds, from the vendor
    rejected: dict[int, str] = field(default_factory=dict)  # index in batch -> vendor error


class Destination(Protocol):
    name: str
    capabilities: Capabilities

    def rules(self, action: str) -> Rules:
        """Where unplaced columns go for this action."""
        ...

    def envelope(self, action: str) -> dict[tuple[str, ...], str]:
        """Fields the destination adds to each payload, as SQL (e.g. the type)."""
        ...

    def invalid_sql(self, action: str, payload: str) -> str:
        """SQL giving the reason a payload breaks the vendor's contract, or NULL."""
        ...

    def request(self, client: httpx.AsyncClient, records: list[Record]) -> httpx.Request:
        ...

    def read(self, response: httpx.Response, records: list[Record]) -> Answer:
        ...
