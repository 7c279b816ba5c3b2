"""The delivery engine alone, against a handler: batching, limits, retries, splits."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from retl_assets.destinations.base import Answer, Capabilities, Record, raise_for_status
from retl_assets.destinations.delivery import RateLimiter, cut, deliver
from retl_assets.errors import (
    AuthError,
    QuotaSpent,
    RefusedRequest,
    RetryableAnswer,
    SetupError,
)


class FakeWriter:
    """A writer for a 'vendor' that is a local handler, behind httpx's transport seam."""

    destination = "fake"

    def __init__(self, caps: Capabilities):
        self.capabilities = caps
        self.seen: list[tuple[float, str, int]] = []

    def request(self, client, operation, records):
        self.seen.append((time.monotonic(), operation, len(records)))
        return client.build_request("POST", f"http://vendor/{operation}",
                                    json=[r.payload for r in records])

    def read(self, response, operation, records):
        raise_for_status(response)
        return Answer()


def records(n: int, operation: str = "upsert") -> list[Record]:
    return [Record(f"m{i}", f"k{i}", '{"x":%d}' % i, operation) for i in range(n)]


def test_cut_respects_count_bytes_and_operation():
    caps = Capabilities(records_per_request=3, bytes_per_request=40, bytes_per_record=40)
    batches = list(cut(records(4) + records(2, "delete"), caps, overhead=0))
    assert [len(b) for b in batches] == [3, 1, 2]
    assert {r.operation for r in batches[-1]} == {"delete"}
    small = Capabilities(records_per_request=100, bytes_per_request=20, bytes_per_record=20)
    assert [len(b) for b in cut(records(5), small, overhead=0)] == [2, 2, 1]


def test_cut_fills_whole_requests_when_operations_arrive_mixed():
    # A writer may route records of one change to two endpoints (update by id, upsert by
    # email): interleaved, they must still fill whole requests, not one or two apiece.
    caps = Capabilities(records_per_request=3, bytes_per_request=10_000, bytes_per_record=100)
    mixed = [r for pair in zip(records(6), records(6, "update")) for r in pair]
    batches = list(cut(mixed, caps))
    assert sorted((b[0].operation, len(b)) for b in batches) == [
        ("update", 3), ("update", 3), ("upsert", 3), ("upsert", 3)]
    assert all(len({r.operation for r in b}) == 1 for b in batches)


def test_cut_gives_a_job_operation_its_own_batch_size_and_bytes():
    # A bulk job takes far more than a request: its operation's batches are cut at its own
    # (records, bytes), above records_per_request; other operations keep the request limits.
    caps = Capabilities(records_per_request=2, bytes_per_request=10_000, bytes_per_record=100,
                        operation_size={"job": (5, 10_000)})
    assert [(b[0].operation, len(b)) for b in cut(records(12, "job") + records(3), caps)] == [
        ("job", 5), ("job", 5), ("upsert", 2), ("job", 2), ("upsert", 1)]
    by_bytes = Capabilities(records_per_request=100, bytes_per_request=10_000,
                            bytes_per_record=100, operation_size={"job": (100, 20)})
    assert [len(b) for b in cut(records(5, "job"), by_bytes, overhead=0)] == [2, 2, 1]
    assert [len(b) for b in cut(records(5), by_bytes, overhead=0)] == [5]


def test_rate_limiter_never_starts_more_than_n_in_a_window():
    async def run():
        limiter = RateLimiter(5, 0.2)
        starts = []
        for _ in range(12):
            await limiter.wait()
            starts.append(time.monotonic())
            limiter.release()  # the answer is in
        return starts

    starts = asyncio.run(run())
    assert all(b - a >= 0.2 - 1e-3 for a, b in zip(starts, starts[5:]))


def test_a_byte_rate_holds_requests_back_by_their_size():
    # 1,200 bytes in any 0.3 s: requests of ~550 bytes go two at a time per window.
    caps = Capabilities(records_per_request=10, bytes_per_request=10_000, bytes_per_record=100,
                        max_concurrency=4, byte_rate=(1200, 0.3))
    arrivals, sizes = [], []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        sizes.append(len(request.content))
        return httpx.Response(200)

    big = [Record(f"m{i}", f"k{i}", '{"x":"%s"}' % ("y" * 40), "upsert") for i in range(40)]
    report = deliver(FakeWriter(caps), big, lambda o: None,
                     transport=httpx.MockTransport(handler))
    assert report.delivered == 40
    assert all(400 < n <= 600 for n in sizes), sizes  # two fit in 1,200 bytes, three do not
    assert all(b - a >= 0.3 - 1e-3 for a, b in zip(arrivals, arrivals[2:]))


def test_per_operation_limits_apply_to_their_operation_only():
    caps = Capabilities(records_per_request=1, bytes_per_request=1000, bytes_per_record=1000,
                        max_concurrency=4, operation_limits={"delete": (2, 0.3)})
    writer = FakeWriter(caps)
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    report = deliver(writer, records(6) + records(6, "delete"), lambda outcomes: None,
                     transport=transport)
    assert report.delivered == 12
    deletes = [t for t, op, _ in writer.seen if op == "delete"]
    assert all(b - a >= 0.3 - 1e-3 for a, b in zip(deletes, deletes[2:]))
    upserts = [t for t, op, _ in writer.seen if op == "upsert"]
    assert upserts[-1] - upserts[0] < 0.3


def test_a_batch_refused_whole_is_split_until_the_bad_record_is_alone():
    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read().decode()
        return httpx.Response(400, text="bad x=7") if '\\"x\\":7' in body else httpx.Response(200)

    caps = Capabilities(records_per_request=16, bytes_per_request=10_000, bytes_per_record=100)
    writer = FakeWriter(caps)
    outcomes = []
    report = deliver(writer, records(16), outcomes.extend, transport=httpx.MockTransport(handler))
    rejected = [o for o in outcomes if o.status == "rejected"]
    assert [o.record.key for o in rejected] == ["k7"] and "bad x=7" in rejected[0].error
    assert report.delivered == 15 and report.splits == 4


def test_429_waits_for_retry_after_and_is_not_a_failure():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"})
        return httpx.Response(200)

    caps = Capabilities(records_per_request=10, bytes_per_request=10_000, bytes_per_record=100)

    class Honouring(FakeWriter):
        def read(self, response, operation, records):
            from retl_assets.destinations.retry import parse_retry_after
            raise_for_status(response, parse_retry_after(response.headers.get("Retry-After")))
            return Answer()

    report = deliver(Honouring(caps), records(5), lambda o: None,
                     transport=httpx.MockTransport(handler))
    assert report.delivered == 5 and report.rate_limited == 1 and report.unsent == 0
    assert calls[1] - calls[0] >= 0.3


def test_429_without_retry_after_waits_the_vendor_window_then_longer():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return httpx.Response(429) if len(calls) <= 2 else httpx.Response(200)

    caps = Capabilities(records_per_request=10, bytes_per_request=10_000, bytes_per_record=100,
                        default_retry_after_s=0.2)
    report = deliver(FakeWriter(caps), records(3), lambda o: None,
                     transport=httpx.MockTransport(handler))
    assert report.delivered == 3 and report.rate_limited == 2
    first, second = calls[1] - calls[0], calls[2] - calls[1]
    assert 0.2 <= first < 0.3 and 0.4 <= second < 0.55  # the window, then twice it


def test_records_the_vendor_asks_for_again_are_resent_alone_until_they_land():
    tries: dict[str, int] = {}

    class Locked(FakeWriter):
        def read(self, response, operation, records):
            answer = Answer()
            for i, r in enumerate(records):
                tries[r.key] = tries.get(r.key, 0) + 1
                if r.key in ("k2", "k5") and tries[r.key] < 3:
                    answer.again[i] = "UNABLE_TO_LOCK_ROW"
            return answer

    caps = Capabilities(records_per_request=10, bytes_per_request=10_000, bytes_per_record=100)
    writer = Locked(caps)
    outcomes = []
    report = deliver(writer, records(8), outcomes.extend,
                     transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert report.delivered == 8 and report.unsent == 0
    assert [n for _, _, n in writer.seen] == [8, 2, 2]  # then only the locked two, twice
    assert tries == {**{f"k{i}": 1 for i in range(8)}, "k2": 3, "k5": 3}
    tries.clear()
    stuck = deliver(Locked(caps), [Record("m9", "k2", "{}", "upsert")], outcomes.extend,
                    max_retries=0, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert stuck.unsent == 1 and "UNABLE_TO_LOCK_ROW" in outcomes[-1].error


def test_a_spent_quota_stops_sending_and_keeps_everything_owed():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(403, json={"errorCode": "REQUEST_LIMIT_EXCEEDED"})

    class Quota(FakeWriter):
        def read(self, response, operation, records):
            raise QuotaSpent("quota spent")

    caps = Capabilities(records_per_request=2, bytes_per_request=10_000, bytes_per_record=100,
                        max_concurrency=1)
    seen = []
    report = deliver(Quota(caps), records(10), seen.extend,
                     transport=httpx.MockTransport(handler))
    assert report.unsent == 10 and report.delivered == 0
    assert len(calls) == 1  # nothing more was sent after the vendor said stop
    assert all(o.status == "unsent" and o.error == "stopped: quota spent" for o in seen)


def test_rate_limiter_holds_a_slot_until_the_answer_is_in():
    async def run():
        limiter = RateLimiter(2, 0.1)
        await limiter.wait()
        await limiter.wait()  # two in flight, none answered
        third = asyncio.create_task(limiter.wait())
        await asyncio.sleep(0.3)  # longer than the window: still blocked, both in flight
        blocked = not third.done()
        limiter.release()
        released_at = time.monotonic()
        await third
        return blocked, time.monotonic() - released_at

    blocked, waited = asyncio.run(run())
    # The vendor may have seen the first request arrive as late as its answer: the third
    # starts only a whole window after that answer.
    assert blocked and waited >= 0.1 - 1e-3


def test_a_refused_key_never_hangs_whatever_the_number_of_batches():
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # the 401s come back after every batch is queued
        return httpx.Response(401)

    for batches in (1, 3, 5, 6, 7, 12):
        caps = Capabilities(records_per_request=1, bytes_per_request=1000, bytes_per_record=100,
                            max_concurrency=2)
        with pytest.raises(AuthError):
            deliver(FakeWriter(caps), records(batches), lambda o: None,
                    transport=httpx.MockTransport(handler))


def test_a_job_sends_several_requests_for_one_batch_and_is_held_to_its_answer():
    # A writer whose batch takes two requests (a lookup, then the write) drives them through
    # the engine's exchange: retried like any request; records its answer leaves out are owed.
    calls = []

    class JobWriter(FakeWriter):
        jobs = frozenset({"upsert"})

        async def job(self, call, operation, batch):
            await call("lookup", lambda c: c.build_request("GET", "http://vendor/find"),
                       lambda response: raise_for_status(response) or Answer())
            return await call(operation, lambda c: self.request(c, operation, batch),
                              lambda response: Answer(ids={0: "a", 1: "b"}))

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if calls.count("/find") == 1:
            return httpx.Response(503)  # the lookup fails once: retried by the engine
        return httpx.Response(200)

    caps = Capabilities(records_per_request=10, bytes_per_request=10_000, bytes_per_record=100,
                        answers="results")
    seen = []
    report = deliver(JobWriter(caps), records(3), seen.extend,
                     transport=httpx.MockTransport(handler))
    assert calls == ["/find", "/find", "/upsert"]
    assert {o.record.key: (o.status, o.dest_id) for o in seen} == {
        "k0": ("delivered", "a"), "k1": ("delivered", "b"), "k2": ("unconfirmed", None)}
    assert report.retries == 1


# -- each error class leads to its decision ------------------------------------------------


class Raising(FakeWriter):
    """A writer whose read() raises `error(records)` while `failing(records)` holds."""

    def __init__(self, caps: Capabilities, error, failing=lambda records: True):
        super().__init__(caps)
        self.error, self.failing = error, failing

    def read(self, response, operation, records):
        if self.failing(records):
            raise self.error(records)
        return Answer()


def one_batch(n: int = 4, **kw) -> Capabilities:
    return Capabilities(records_per_request=n, bytes_per_request=10_000, bytes_per_record=100,
                        max_concurrency=1, **kw)


def answered(writer, n: int = 4, **kw):
    seen = []
    report = deliver(writer, records(n), seen.extend,
                     transport=httpx.MockTransport(lambda r: httpx.Response(200)), **kw)
    return report, {o.record.key: o for o in seen}


def test_a_retryable_answer_is_sent_again_then_given_up_with_the_records_owed(monkeypatch):
    monkeypatch.setattr("retl_assets.destinations.delivery.backoff", lambda attempt: 0.0)
    writer = Raising(one_batch(), lambda records: RetryableAnswer("HTTP 503: busy",
                                                                   status=503))
    report, got = answered(writer, max_retries=2)
    assert len(writer.seen) == 3 and report.retries == 2  # sent, then twice more
    assert {o.status for o in got.values()} == {"unsent"} and report.unsent == 4
    assert got["k0"].error == "gave up after 3 attempts: HTTP 503: busy"


def test_a_retryable_answer_that_passes_is_delivered(monkeypatch):
    monkeypatch.setattr("retl_assets.destinations.delivery.backoff", lambda attempt: 0.0)
    writer = Raising(one_batch(), lambda records: RetryableAnswer("answer not understood"),
                     failing=lambda records: len(writer.seen) < 2)
    report, _ = answered(writer)
    assert (report.delivered, report.retries, len(writer.seen)) == (4, 1, 2)


def test_a_refused_request_is_split_until_the_refused_record_stands_alone():
    writer = Raising(one_batch(), lambda records: RefusedRequest("bad k2", status=400),
                     failing=lambda records: any(r.key == "k2" for r in records))
    report, got = answered(writer)
    assert [n for _, _, n in writer.seen] == [4, 2, 2, 1, 1]  # halved around k2
    assert {k: o.status for k, o in got.items()} == {
        "k0": "delivered", "k1": "delivered", "k2": "rejected", "k3": "delivered"}
    assert got["k2"].error == "bad k2" and report.splits == 2


def test_a_spent_quota_stops_every_later_request_with_its_rows_owed():
    # Jobs and follow-ups go through the same exchange: once the vendor says stop, a job's
    # next step is not sent either.
    calls = []

    class Job(FakeWriter):
        jobs = frozenset({"upsert"})

        async def job(self, call, operation, batch):
            await call("lookup", lambda c: c.build_request("GET", "http://vendor/find"),
                       lambda response: Answer())
            return await call(operation, lambda c: self.request(c, operation, batch),
                              self.spent)

        def spent(self, response):
            raise QuotaSpent("daily limit reached")

    def handler(request):
        calls.append(request.url.path)
        return httpx.Response(200)

    seen = []
    report = deliver(Job(one_batch(2)), records(6), seen.extend,
                     transport=httpx.MockTransport(handler))
    assert calls == ["/find", "/upsert"]  # the later batches' lookups were never sent
    assert (report.unsent, report.delivered) == (6, 0)
    assert {o.error for o in seen} == {"stopped: daily limit reached"}


def test_an_auth_error_raises_out_of_deliver_naming_the_destination():
    writer = Raising(one_batch(), lambda records: AuthError("HTTP 401: bad token"))
    with pytest.raises(AuthError, match="^destination 'fake' refused the credentials: "
                                        "HTTP 401: bad token$"):
        answered(writer)
    assert len(writer.seen) == 1  # never retried


def test_a_setup_error_raises_out_of_deliver_naming_the_destination():
    writer = Raising(one_batch(), lambda records: SetupError("no such object Contakt"))
    with pytest.raises(SetupError, match="^destination 'fake' refused the sync's setup: "
                                         "no such object Contakt$"):
        answered(writer)
    assert len(writer.seen) == 1


def test_request_errors_keep_their_data_across_pickling():
    import pickle

    from retl_assets.errors import RateLimited

    again = pickle.loads(pickle.dumps(RateLimited("HTTP 429", status=429, retry_after=2.5)))
    assert (type(again), str(again), again.status, again.retry_after) == (
        RateLimited, "HTTP 429", 429, 2.5)
    assert isinstance(again, RetryableAnswer) and again.transient


def test_raise_for_status_says_what_each_status_means():
    from retl_assets.errors import RateLimited

    def raised(status: int):
        try:
            raise_for_status(httpx.Response(status, text="why"), retry_after=3.0)
        except Exception as e:  # noqa: BLE001 - the class is what is checked
            return type(e), getattr(e, "retry_after", None)
        return None

    assert raised(200) is None and raised(204) is None
    assert raised(401) == raised(403) == (AuthError, None)
    assert raised(429) == (RateLimited, 3.0)
    assert {raised(s) for s in (400, 404, 409, 413, 422)} == {(RefusedRequest, None)}
    assert {raised(s) for s in (408, 500, 502, 503)} == {(RetryableAnswer, None)}
