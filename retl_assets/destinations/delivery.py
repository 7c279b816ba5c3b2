"""The shared delivery engine: batch, limit, send, retry, split, report.

Records arrive as a stream; they are cut into requests by count and bytes, sent by a few
workers under the destination's concurrency and rate limits, and every record ends in one
outcome: delivered (the vendor's answer accounts for it), rejected (the vendor refused it),
unsent (retries ran out, or the vendor's quota is spent) or unconfirmed (the answer left it
out: it stays owed). What a failed request leads to is its error's class (errors.py): wait
and resend, split, stop sending; auth failures, a setup the vendor refuses and a dead
endpoint stop the whole delivery at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field

import httpx

from retl_assets.destinations.base import UNCONFIRMED, Answer, Capabilities, Record, Writer
from retl_assets.destinations.retry import backoff, rate_limit_wait
from retl_assets.errors import (
    AuthError,
    QuotaSpent,
    RateLimited,
    RefusedRequest,
    RetryableAnswer,
    SetupError,
    UnreachableError,
)

MAX_RATE_LIMIT_WAIT_S = 900.0  # waiting out 429s is normal; only this much in total


@dataclass(slots=True)
class Outcome:
    record: Record
    status: str  # delivered | rejected | unsent | unconfirmed
    error: str | None = None
    dest_id: str | None = None  # the vendor's id, when its answer gave one


@dataclass
class Report:
    sent: int = 0
    delivered: int = 0
    rejected: int = 0
    unsent: int = 0
    unconfirmed: int = 0  # sent, but the answer did not account for them: still owed
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    splits: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, error), first few


def merge(total: Report, part: Report) -> Report:
    """Add one delivery's figures to another's (a sync may deliver in several parts)."""
    for name in ("sent", "delivered", "rejected", "unsent", "unconfirmed", "requests", "retries",
                 "rate_limited", "splits", "seconds"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.errors += part.errors[: max(0, 50 - len(total.errors))]
    return total


class RateLimiter:
    """At most `n` requests (or bytes: each wait names its weight) in any `window` seconds
    *as the vendor counts them*.

    The vendor sees a request arrive somewhere between our start and its answer, so a slot is
    held from the start until the answer returns and only then ages out of the window: no
    window of the vendor's can hold more than `n`, however the network or the machine delays
    requests. A single weight above `n` goes alone, when nothing else is counted."""

    def __init__(self, n: int, window: float):
        self.n, self.window = n, window
        self._ends: deque[tuple[float, int]] = deque()  # (when the answer came back, weight)
        self._counted = 0  # weight of _ends
        self._in_flight = 0
        self._lock = asyncio.Lock()

    async def wait(self, weight: int = 1) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._ends and now - self._ends[0][0] >= self.window:
                    self._counted -= self._ends.popleft()[1]
                busy = self._counted + self._in_flight
                if busy + weight <= self.n or busy == 0:
                    self._in_flight += weight
                    return
                # Wait for the oldest answer to age out, or for one in flight to come back.
                delay = self.window - (now - self._ends[0][0]) if self._ends else 0.005
                await asyncio.sleep(max(delay, 0.001))

    def release(self, weight: int = 1) -> None:
        """The answer (or the error) of a request started after `wait()` is in."""
        self._in_flight -= weight
        self._ends.append((time.monotonic(), weight))
        self._counted += weight


def cut(records: Iterable[Record], caps: Capabilities,
        overhead: int = 64) -> Iterable[list[Record]]:
    """Requests of one operation each, at most `records_per_request` records and
    `bytes_per_request` bytes (or the operation's own batch and size). One batch stays open
    per operation, so records of two operations arriving mixed still fill whole requests."""
    open_batches: dict[str, tuple[list[Record], int]] = {}
    for r in records:
        batch, size = open_batches.get(r.operation, ([], overhead))
        n = len(r.payload) + 1  # +1 for the separating comma
        if batch and (len(batch) >= caps.batch_for(r.operation)
                      or size + n > caps.bytes_for(r.operation)):
            yield batch
            batch, size = [], overhead
        batch.append(r)
        open_batches[r.operation] = (batch, size + n)
    for batch, _ in open_batches.values():
        if batch:
            yield batch


class _Delivery:
    """One delivery's client, limiters and report. `exchange` takes one request to its success
    answer or its error; `send` one batch to its records' outcomes, deciding by the error's
    class what becomes of them (errors.py draws the tree)."""

    def __init__(self, dest: Writer, client: httpx.AsyncClient, report: Report,
                 max_retries: int):
        caps = dest.capabilities
        self.dest, self.caps, self.client, self.report = dest, caps, client, report
        self.max_retries = max_retries
        self.limiter = RateLimiter(*caps.rate_limit) if caps.rate_limit else None
        self.per_op = {op: RateLimiter(*limit) for op, limit in caps.operation_limits.items()}
        self.byte_limiter = RateLimiter(*caps.byte_rate) if caps.byte_rate else None
        self.in_flight = {op: asyncio.Semaphore(n)
                          for op, n in caps.operation_concurrency.items()}
        self.follow_up = getattr(dest, "follow_up", None)
        self.jobs = getattr(dest, "jobs", frozenset())
        self.stopped: str | None = None  # why, once the vendor said its quota is spent

    async def exchange(self, op: str, build: Callable[[httpx.AsyncClient], httpx.Request],
                       read: Callable[[httpx.Response], Answer]) -> Answer:
        """One request until it has a success answer. RateLimited waits as the vendor asks
        (up to MAX_RATE_LIMIT_WAIT_S in all), RetryableAnswer and connection errors back off
        (up to max_retries); then the request's error is raised, as a refusal or a spent
        quota are at once. Auth and setup refusals raise naming the destination."""
        tries, waited, limited = 0, 0.0, 0
        while True:
            if self.stopped is not None:
                raise QuotaSpent(self.stopped)
            try:
                response = await self._post(op, build)
            except httpx.TransportError as e:
                if tries >= self.max_retries:
                    raise UnreachableError(
                        f"destination {self.dest.destination!r} could not be reached at "
                        f"{_endpoint(e)} after {tries + 1} attempts: {type(e).__name__}: {e}"
                    ) from None
                tries += 1
                await self._back_off(tries)
                continue
            try:
                answer = read(response)
            except RateLimited as e:
                self.report.rate_limited += 1
                # No Retry-After: the vendor's documented window, longer each time in a row
                # (someone else may share the quota), with jitter.
                delay = e.retry_after if e.retry_after is not None else rate_limit_wait(
                    self.caps.default_retry_after_s, limited)
                limited += 1
                waited += delay
                if waited <= MAX_RATE_LIMIT_WAIT_S:
                    await asyncio.sleep(delay)
                    continue
                failure: RetryableAnswer = e  # waited enough: from now on it counts as a try
            except RetryableAnswer as e:
                failure = e
            except QuotaSpent as e:
                self.stopped = f"stopped: {e}"
                raise QuotaSpent(self.stopped, status=e.status) from None
            except (AuthError, SetupError) as e:
                raise e.naming(self.dest.destination) from None
            else:
                answer.text = answer.text or response.text[:300]
                return answer
            if tries >= self.max_retries:
                raise RetryableAnswer(f"gave up after {tries + 1} attempts: {failure}",
                                      status=failure.status) from None
            tries += 1
            await self._back_off(tries)

    async def _post(self, op: str,
                    build: Callable[[httpx.AsyncClient], httpx.Request]) -> httpx.Response:
        """Send one request under the limiters, holding each slot until the answer is in."""
        held: list[tuple[RateLimiter, int]] = []
        try:
            for limiter in (self.limiter, self.per_op.get(op)):
                if limiter is not None:
                    await limiter.wait()
                    held.append((limiter, 1))
            request = build(self.client)
            if self.byte_limiter is not None:
                await self.byte_limiter.wait(len(request.content))
                held.append((self.byte_limiter, len(request.content)))
            self.report.requests += 1
            async with self.in_flight.get(op) or nullcontext():
                return await self.client.send(request)
        finally:
            for limiter, weight in held:
                limiter.release(weight)

    async def _back_off(self, tries: int) -> None:
        self.report.retries += 1
        await asyncio.sleep(backoff(tries))

    async def send(self, batch: list[Record], tries: int = 0) -> list[Outcome]:
        """One batch to an outcome for each of its records."""
        op = batch[0].operation
        try:
            answer = await self._answer(op, batch)
        except RefusedRequest as refused:
            return await self._split(batch, refused, tries)
        except (RetryableAnswer, QuotaSpent) as e:
            # Retries ran out, or nothing more may be sent this run: the batch stays owed.
            return [Outcome(r, "unsent", str(e)) for r in batch]
        if self.follow_up is not None:
            # Requests the delivered records still need (e.g. associations); they may
            # reject records the first request took.
            await self.follow_up(self.exchange, op, batch, answer)
        outcomes = accounted(batch, answer, self.caps.answer_for(op))
        return outcomes + await self._again(batch, answer, tries)

    async def _answer(self, op: str, batch: list[Record]) -> Answer:
        if op in self.jobs:
            # Several requests carry this batch (a lookup then writes, a bulk job): the
            # writer drives them through `exchange` and answers for the whole batch.
            return await self.dest.job(self.exchange, op, batch)
        return await self.exchange(op, lambda client: self.dest.request(client, op, batch),
                                   lambda response: self.dest.read(response, op, batch))

    async def _split(self, batch: list[Record], refused: RefusedRequest,
                     tries: int) -> list[Outcome]:
        if len(batch) == 1:
            return [Outcome(batch[0], "rejected", str(refused))]
        # One bad record refuses the whole batch: halve until it is isolated.
        self.report.splits += 1
        mid = len(batch) // 2
        return await self.send(batch[:mid], tries) + await self.send(batch[mid:], tries)

    async def _again(self, batch: list[Record], answer: Answer, tries: int) -> list[Outcome]:
        """The records the vendor asked for again (a locked row), resent alone."""
        again = [r for i, r in enumerate(batch) if i in answer.again]
        if not again:
            return []
        if tries < self.max_retries:
            await self._back_off(tries + 1)
            return await self.send(again, tries + 1)
        return [Outcome(r, "unsent", f"gave up after {tries + 1} attempts: {answer.again[i]}")
                for i, r in enumerate(batch) if i in answer.again]


async def _deliver(dest: Writer, records: Iterable[Record],
                   on_outcomes: Callable[[list[Outcome]], None], report: Report,
                   max_retries: int, timeout_s: float,
                   transport: httpx.AsyncBaseTransport | None) -> None:
    caps = dest.capabilities
    queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(maxsize=caps.max_concurrency * 2)
    limits = httpx.Limits(max_connections=caps.max_concurrency,
                          max_keepalive_connections=caps.max_concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, transport=transport) as client:
        delivery = _Delivery(dest, client, report, max_retries)

        async def worker() -> None:
            while (batch := await queue.get()) is not None:
                outcomes = await delivery.send(batch)
                count(report, outcomes)
                on_outcomes(outcomes)

        workers = [asyncio.create_task(worker()) for _ in range(caps.max_concurrency)]

        async def put(item: list[Record] | None) -> None:
            # put() waits while workers are behind, so memory stays flat; a worker that
            # failed (a 401, a dead endpoint) must stop us here rather than leave us blocked.
            task = asyncio.create_task(queue.put(item))
            await asyncio.wait([task, *workers], return_when=asyncio.FIRST_COMPLETED)
            for w in workers:
                if w.done() and not w.cancelled() and w.exception():
                    task.cancel()
                    raise w.exception()  # type: ignore[misc]
            await task

        try:
            for batch in cut(records, caps):
                report.sent += len(batch)
                await put(batch)
            for _ in workers:
                await put(None)
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()


def accounted(batch: list[Record], answer: Answer, kind: str) -> list[Outcome]:
    """Each record's outcome from a success answer, held to what the vendor's answer kind
    promises: a record is delivered only when the answer accounts for it. Records the answer
    asks for again are left out (the caller resends them)."""
    n = len(batch)
    unplaced = list(answer.unplaced)
    unplaced += [e for i, e in answer.rejected.items() if not 0 <= i < n]
    took = n - len([i for i in answer.rejected.keys() | answer.again.keys() if 0 <= i < n])
    if kind == "whole" and answer.counted is not None and answer.counted != took:
        unplaced.append(f"it says it took {answer.counted} of the {took} records it did not "
                        f"name as failed")
    if kind == "results":
        named = answer.confirmed | answer.ids.keys()
    else:
        named = set() if unplaced else set(range(n))
    why = UNCONFIRMED + (f" ({unplaced[0][:200]})" if unplaced else
                         f"; it answered: {answer.text[:300]}" if answer.text else "")
    outcomes = []
    for i, r in enumerate(batch):
        if i in answer.again:
            continue
        if i in answer.rejected:
            outcomes.append(Outcome(r, "rejected", answer.rejected[i], answer.ids.get(i)))
        elif i in named:
            outcomes.append(Outcome(r, "delivered", dest_id=answer.ids.get(i, r.sent_id)))
        else:
            outcomes.append(Outcome(r, "unconfirmed", why, answer.ids.get(i)))
    return outcomes


def count(report: Report, outcomes: list[Outcome]) -> None:
    """Tally outcomes into a report."""
    for o in outcomes:
        if o.status == "delivered":
            report.delivered += 1
            continue
        if o.status == "rejected":
            report.rejected += 1
        elif o.status == "unconfirmed":
            report.unconfirmed += 1
        else:
            report.unsent += 1
        if len(report.errors) < 50:
            report.errors.append((o.record.key, o.error or ""))


def deliver(dest: Writer, records: Iterable[Record],
            on_outcomes: Callable[[list[Outcome]], None], *, max_retries: int = 6,
            timeout_s: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> Report:
    """Send every record; `on_outcomes` is called after each request completes.
    `transport` swaps the network for a handler (tests)."""
    report = Report()
    started = time.monotonic()
    try:
        asyncio.run(_deliver(dest, records, on_outcomes, report, max_retries, timeout_s,
                             transport))
    except Exception as e:
        # A stop (auth, unreachable, setup) still made requests and retries: they go with it.
        with contextlib.suppress(AttributeError):
            e.retl_delivery_report = report  # type: ignore[attr-defined]
        raise
    finally:
        report.seconds = time.monotonic() - started
    return report


def stopped_report(error: BaseException) -> Report | None:
    """The report of the delivery `error` stopped (None: not raised inside `deliver`)."""
    return getattr(error, "retl_delivery_report", None)


def _endpoint(error: httpx.TransportError) -> str:
    """scheme://host:port the failed request went to; its path and query string (which may
    carry a key) stay out of the message."""
    try:
        url = error.request.url
    except RuntimeError:  # raised before a request was built
        return "its endpoint"
    return f"{url.scheme}://{url.netloc.decode('ascii')}"
