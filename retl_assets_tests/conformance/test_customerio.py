"""Customer.io's own library (`customerio-cdp-analytics`) against the Customer.io Data
Pipelines emulator.

Data Pipelines answers 200 and only logs an error unless the request carries
`X-Strict-Mode: 1` (Customer.io's Node client documents the header: "validate payloads and
return proper HTTP error codes instead of accepting malformed events silently"). The Python
library has no option for it, so the strict tests add the header to its HTTP session.
The library reads an error body as `{code, message}`; any other JSON body makes it raise a
KeyError, which its consumer retries as if the network had failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from customerio.analytics import Client
from customerio.analytics import request as cio_request
from customerio.analytics.request import APIError

from retl_assets.destinations.segment.writer import SegmentDestination, SegmentWriter
from retl_assets.emulators import SegmentEmulator, build_segment_app
from retl_assets_tests.conformance.serving import finishes_within, served

pytestmark = pytest.mark.timeout(60)

KEY = "cio-write-key"
REGION_KEYS = ("pk_us_3f9a", "sk_eu_77c1")  # the library sends these as Bearer tokens


@pytest.fixture
def customerio() -> Iterator[tuple[SegmentEmulator, str]]:
    emulator = SegmentEmulator(write_keys={KEY, *REGION_KEYS}, flavor="customerio")
    with served(build_segment_app(emulator)) as url:
        yield emulator, url


@pytest.fixture
def strict_mode(monkeypatch) -> None:
    """Every request the library sends carries X-Strict-Mode: 1 (undone after the test)."""
    monkeypatch.setitem(cio_request._session.headers, "X-Strict-Mode", "1")


def sync_client(url: str, key: str = KEY, **options: Any) -> Client:
    """One request a call, no background thread, no retries: the answer is the call's."""
    return Client(key, host=url, sync_mode=True, timeout=5, max_retries=0, **options)


def test_every_call_the_library_makes_lands(customerio) -> None:
    emulator, url = customerio
    client = sync_client(url)
    client.identify("u1", {"email": "a@x.io"})
    client.track("u1", "Signed Up", {"plan": "pro"})
    client.page("u1", "Docs", "Install")
    client.screen(anonymous_id="a1", name="Home")
    client.group("u1", "acme", {"plan": "enterprise"})
    client.alias("a1", "u1")

    state = emulator.state()
    assert state["profiles"] == {"u1": {"email": "a@x.io"}}
    assert [e["type"] for e in state["events"]] == ["track", "page", "screen"]
    assert state["groups"] == {"acme": {"traits": {"plan": "enterprise"}, "members": ["u1"]}}
    assert state["aliases"] == [{"previousId": "a1", "userId": "u1"}]
    assert state["stats"]["contract_violations"] == []


def test_the_success_answer_is_an_empty_object(customerio) -> None:
    _, url = customerio
    response = cio_request.post(KEY, host=url, timeout=5,
                                batch=[{"type": "identify", "userId": "u1", "traits": {}}])
    assert (response.status_code, response.json()) == (200, {})


def test_a_repeated_message_id_is_applied_once(customerio) -> None:
    emulator, url = customerio
    client = sync_client(url)
    for _ in range(2):
        client.track("u1", "Upgraded", message_id="m-1")

    assert [e["messageId"] for e in emulator.state()["events"]] == ["m-1"]
    assert emulator.state()["stats"]["duplicates"] == 1


@pytest.mark.parametrize("key", REGION_KEYS)
def test_region_keys_sent_as_bearer_are_accepted(customerio, strict_mode, key: str) -> None:
    emulator, url = customerio
    sync_client(url, key=key).identify("u1", {"plan": "pro"})
    assert emulator.state()["profiles"] == {"u1": {"plan": "pro"}}


def test_the_background_thread_batches_gzips_and_flushes(customerio) -> None:
    emulator, url = customerio
    errors: list[Any] = []
    client = Client(KEY, host=url, gzip=True, upload_size=50, upload_interval=0.05,
                    timeout=5, max_retries=0, on_error=lambda e, batch: errors.append(e))
    for i in range(120):
        client.track(f"u{i}", "Seen", {"n": i})
    finishes_within(30, client.shutdown)

    state = emulator.state()
    assert errors == [] and len(state["events"]) == 120
    assert state["stats"]["batches_accepted"] >= 3


def test_without_strict_mode_a_wrong_key_gets_200_and_nothing_lands(customerio) -> None:
    emulator, url = customerio
    ok, _ = sync_client(url, key="not-the-key").identify("u1", {"plan": "pro"})

    assert ok
    state = emulator.state()
    assert state["profiles"] == {} and state["stats"]["unauthorized"] == 1


def test_in_strict_mode_a_wrong_key_is_a_401_the_library_reads(customerio, strict_mode) -> None:
    emulator, url = customerio
    with pytest.raises(APIError) as refused:
        sync_client(url, key="not-the-key").identify("u1", {"plan": "pro"})

    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert refused.value.message  # the library raises KeyError when the body has none
    assert emulator.state()["profiles"] == {}


def test_a_group_without_a_person_is_dropped_or_refused_in_strict_mode(customerio,
                                                                        monkeypatch) -> None:
    # The library lets group() go without userId or anonymousId; the spec does not.
    emulator, url = customerio
    sync_client(url).group(group_id="acme", traits={"plan": "pro"})
    assert emulator.state()["groups"] == {}
    assert emulator.state()["stats"]["contract_violations"][0]["reason"] == (
        "group needs userId or anonymousId")

    monkeypatch.setitem(cio_request._session.headers, "X-Strict-Mode", "1")
    with pytest.raises(APIError) as refused:
        sync_client(url).group(group_id="acme", traits={"plan": "pro"})
    assert (refused.value.status, refused.value.code) == (400, "invalid_request")
    assert emulator.state()["groups"] == {}


def test_a_rate_limit_answer_is_one_the_library_reads(customerio) -> None:
    emulator, url = customerio
    emulator.set_faults(rate_429=1.0, retry_after=1)
    with pytest.raises(APIError) as limited:
        sync_client(url).track("u1", "Signed Up")

    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert emulator.state()["events"] == []


def test_retl_sends_region_keys_as_the_library_does(customerio) -> None:
    emulator, url = customerio
    assert SegmentDestination("cio", "customerio", "sk_eu_77c1").base_url == \
        "https://cdp-eu.customer.io"  # the library's host for an EU key
    dest = SegmentDestination("cio", "customerio", "sk_eu_77c1", base_url=url)
    with httpx.Client(timeout=5) as http:
        request = dest.check_request(http)
        answer = http.send(request)
    assert request.headers["Authorization"] == "Bearer sk_eu_77c1"
    assert request.headers["X-Strict-Mode"] == "1"
    assert answer.status_code == 200 and emulator.state()["stats"]["unauthorized"] == 0


def test_retl_reads_a_strict_mode_refusal_as_an_auth_error(customerio) -> None:
    _, url = customerio
    dest = SegmentDestination("cio", "customerio", "not-the-key", base_url=url)
    with httpx.Client(timeout=5) as http:
        response = http.send(dest.check_request(http))
    from retl_assets.errors import AuthError

    with pytest.raises(AuthError) as refused:
        SegmentWriter(dest, sync=None).read(response, "identify", [])  # read needs no sync
    assert str(refused.value) == "HTTP 401 unauthorized: invalid or missing write key"
