"""What a destination declares (capabilities, as data) and the writer it hands each sync.

A destination is a connection to one vendor account. For each sync it makes a `Writer`
that knows the sync's object, match and action, and turns batches of encoded records into
requests and answers into per-record outcomes. The delivery engine does everything else.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

from retl_assets.errors import (
    AuthError,
    ProjectError,
    RateLimited,
    RefusedRequest,
    RetryableAnswer,
)
from retl_assets.mapping import Rules, Tree

# What a vendor documents its success answer to mean; the engine holds every writer to it.
#   results: one result per record; a record is delivered only when a result names it (an id,
#       or `confirmed`); every record the answer leaves out stays owed.
#   whole:   the request succeeded as a whole: every record it does not name as failed is
#       delivered, unless the answer holds a failure it cannot place (`unplaced`), when none is.
AnswerKind = Literal["results", "whole"]
UNCONFIRMED = "the destination's answer did not confirm this record"


@dataclass(frozen=True)
class Capabilities:
    records_per_request: int
    bytes_per_request: int
    bytes_per_record: int
    max_concurrency: int = 4
    rate_limit: tuple[int, float] | None = None  # (requests, per seconds), all operations
    byte_rate: tuple[int, float] | None = None  # (request body bytes, per seconds)
    # Vendors that limit endpoints apart (e.g. updates 5/s, events 10/s): per operation.
    operation_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    # ...and that take fewer records in some calls (e.g. deletes one by one): per operation.
    operation_batch: dict[str, int] = field(default_factory=dict)
    # ...and whose jobs take far more than a request (a bulk job's upload): per operation,
    # (records, bytes) a batch, in place of records_per_request and bytes_per_request.
    operation_size: dict[str, tuple[int, int]] = field(default_factory=dict)
    # ...and that allow fewer requests in flight on some APIs: per operation.
    operation_concurrency: dict[str, int] = field(default_factory=dict)
    default_retry_after_s: float = 1.0  # when a 429 carries no Retry-After
    deduplicates: bool = False  # drops a resent idempotency key
    # What a success answer accounts for (see ANSWERS), for all operations or per operation.
    answers: AnswerKind = "whole"
    operation_answers: dict[str, AnswerKind] = field(default_factory=dict)

    def batch_for(self, operation: str) -> int:
        if operation in self.operation_size:
            return self.operation_size[operation][0]
        return min(self.operation_batch.get(operation, self.records_per_request),
                   self.records_per_request)

    def bytes_for(self, operation: str) -> int:
        return self.operation_size.get(operation, (0, self.bytes_per_request))[1]

    def answer_for(self, operation: str) -> AnswerKind:
        return self.operation_answers.get(operation, self.answers)


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 µs a field, per record
class Record:
    msgid: str
    key: str  # the primary key as text, for the ledger and error tables
    payload: str  # JSON text
    operation: str = ""
    dest_id: str | None = None  # the vendor's id of this record, when retl knows it
    # For vendors that keep no id of their own: the identifier this request writes the record
    # under, kept as its id once delivered (what a later delete names).
    sent_id: str | None = None


@dataclass
class Answer:
    """What a success answer says of each record of the batch, indexed like it. An answer that
    is not a success is never an Answer: `read()` raises it (errors.RequestError, AuthError,
    SetupError), and the engine decides by its class."""

    rejected: dict[int, str] = field(default_factory=dict)  # index in batch -> vendor error
    # index in batch -> the vendor's own code for that rejection (HubSpot's category), kept
    # as data for a writer that acts on it (e.g. an update whose record is gone)
    codes: dict[int, str] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)  # index in batch -> vendor's id
    # index in batch -> a passing error: the vendor took the rest, send these again
    again: dict[int, str] = field(default_factory=dict)
    confirmed: set[int] = field(default_factory=set)  # indexes a result names as written
    # Failures in the answer that name no record of the batch (an error without context):
    # nothing the answer leaves unnamed can then count as delivered.
    unplaced: list[str] = field(default_factory=list)
    # How many records the vendor says it took (a `successCount`), when it says: a whole
    # answer whose count disagrees with the records it left unnamed confirms none of them.
    counted: int | None = None
    text: str = ""  # the answer's own text (its start), for records it did not confirm


# The engine's way to send one more request for a writer (a job's step, a follow-up):
# (operation, build the request on the engine's client, read its answer) -> the success
# answer, after the limiters, retries and Retry-After that every request gets. A request
# that does not succeed raises its errors.RequestError (retries spent, refused, quota spent);
# AuthError and SetupError raise too, naming the destination.
Exchange = Callable[[str, Callable[[httpx.AsyncClient], httpx.Request],
                     Callable[[httpx.Response], "Answer"]], Awaitable["Answer"]]


class Writer(Protocol):
    """One sync's view of a destination."""

    destination: str
    capabilities: Capabilities

    def operations(self) -> dict[str, str]:
        """Change (added, updated, deleted) -> the vendor operation that carries it."""
        ...

    def rules(self, operation: str) -> Rules:
        """Where the user's mapped fields go in this operation's payload."""
        ...

    def payload(self, operation: str, mapped: Tree) -> Tree:
        """The whole payload: the mapped fields plus what the vendor needs around them."""
        ...

    def needs_dest_id(self, operation: str) -> bool:
        """True when the operation addresses the vendor's own id (deletes, mostly)."""
        ...

    def invalid_sql(self, operation: str, payload: str) -> str:
        """SQL giving why a payload breaks the vendor's contract, or NULL."""
        ...

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        ...

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        """The success answer's per-record results; raises what any other answer means
        (see errors.py: RetryableAnswer, RateLimited, RefusedRequest, QuotaSpent, AuthError,
        SetupError)."""
        ...

    # Optional, for vendors that need them:
    #   route(operation, dest_id) -> operation: send this record by another endpoint (e.g.
    #       update by the vendor's id once retl knows it);
    #   async follow_up(call: Exchange, operation, records, answer): more requests a delivered
    #       batch needs (e.g. associations), which may add to answer.rejected / answer.ids; a
    #       follow-up that does not succeed (a RequestError) rejects the records it was for;
    #   jobs: set of operations whose batches take several requests (a search, then updates
    #       and creates; a bulk job), with async job(call: Exchange, operation, records) ->
    #       Answer for the whole batch, its requests sent through `call` (a job's batch size
    #       can be its own: Capabilities.operation_size); a RequestError it raises is decided
    #       for the whole batch as for one request (RefusedRequest splits it);
    #   bulk_threshold: int | None, with bulk_operation(operation) -> operation: a run with
    #       more records of one operation than the threshold sends them all by its bulk form
    #       (one of `jobs`; rules, payload, needs_dest_id and invalid_sql take it too);
    #   sent_id(operation) -> SQL | None: the identifier a record is written under, for vendors
    #       that answer with no id of their own (it becomes the record's id once delivered).


class Destination(Protocol):
    name: str

    def writer(self, sync_name: str, sync) -> Writer:  # sync: SyncConfig
        ...

    def check_request(self, client: httpx.Client) -> httpx.Request:
        """The vendor's cheapest read-only call, to test the credentials."""
        ...

    # Optional: check_answer(response) -> (ok, what it means) | None, for answers to
    # check_request that mean something particular at this vendor (e.g. a spent quota).


class JsonApi:
    """What a destination that speaks one JSON API keeps: its root URL and the headers of
    every call (credentials live only there, so repr() and logs never show them)."""

    base_url: str
    _headers: dict[str, str]

    def build(self, client: httpx.AsyncClient | httpx.Client, method: str, path: str,
              body: bytes | None = None, **kwargs) -> httpx.Request:
        return client.build_request(method, f"{self.base_url}{path}", content=body,
                                    headers=self._headers, **kwargs)


def json_batch(records: list[Record], key: str | None = None, **around: object) -> bytes:
    """The records' payloads (JSON text already) as one body: `[...]`, or `{key: [...]}`
    with any `around` fields beside it. No payload is parsed again on the way."""
    items = "[" + ",".join(r.payload for r in records) + "]"
    if key is None:
        return items.encode()
    head = "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in around.items())
    return ("{" + head + json.dumps(key) + ":" + items + "}").encode()


def json_body(response: httpx.Response) -> dict:
    """The answer's JSON object; {} when the body is not one (an HTML error page, a bare 1)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def blank(payload: str, path: str) -> str:
    """SQL: true when the payload has nothing (or an empty text) at `path`, e.g. `$.email`."""
    return f"coalesce(json_extract_string({payload}, '{path}'), '') = ''"


def first_problem(checks: list[tuple[str, str]]) -> str:
    """SQL giving the reason (an SQL text) of the first check whose condition holds, or NULL:
    what a writer's invalid_sql returns."""
    whens = " ".join(f"WHEN {condition} THEN {reason}" for condition, reason in checks)
    return f"CASE {whens} ELSE NULL END"


def raise_for_status(response: httpx.Response, retry_after: float | None = None,
                     reason: str | None = None) -> None:
    """Raise what a non-2xx status means, as every HTTP API shares it; nothing for 2xx.
    `retry_after`: the wait a 429 asks for; `reason`: the vendor's error in its own words
    (default: the status and the body's start)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    error = reason or f"HTTP {status}: {response.text[:300]}"
    if status in (401, 403):
        raise AuthError(error)
    if status == 429:
        raise RateLimited(error, status=status, retry_after=retry_after)
    if status in (400, 404, 409, 413, 422):
        raise RefusedRequest(error, status=status)
    raise RetryableAnswer(error, status=status)


def one_identifier(sync_name: str, sync, vendor: str, allowed: tuple[str, ...] | frozenset[str],
                   example: str) -> tuple[str, str]:
    """The sync's single `match` entry (vendor identifier, model column) for a vendor that
    syncs users only; a clear error naming the field otherwise."""
    if sync.object not in (None, "users"):
        raise ProjectError(f"syncs.{sync_name}.object: {vendor} syncs users; leave object "
                           f"out or set it to users")
    if not sync.match or len(sync.match) != 1 or next(iter(sync.match)) not in allowed:
        raise ProjectError(f"syncs.{sync_name}.match: give the one {vendor} identifier to "
                           f"match users on, {example}")
    return next(iter(sync.match.items()))
