"""Segment's own library (`segment-analytics-python`) against the Segment emulator.

Segment answers 200 to every request but JSON errors and over-size ones ("Segment returns a
200 response for all API requests except errors caused by large payloads and JSON errors"):
a wrong write key is not refused, its events just never arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from segment.analytics import Client
from segment.analytics.request import APIError, parse_retry_after

from retl_assets.emulators import SegmentEmulator, build_segment_app
from retl_assets_tests.conformance.serving import finishes_within, served

pytestmark = pytest.mark.timeout(60)

KEY = "seg-write-key"


@pytest.fixture
def segment() -> Iterator[tuple[SegmentEmulator, str]]:
    emulator = SegmentEmulator(write_keys={KEY}, flavor="segment")
    with served(build_segment_app(emulator)) as url:
        yield emulator, url


def sync_client(url: str, key: str = KEY, **options: Any) -> Client:
    """One request a call, no background thread, no retries: the answer is the call's."""
    return Client(key, host=url, sync_mode=True, timeout=5, max_retries=0, **options)


def test_every_call_the_library_makes_lands(segment) -> None:
    emulator, url = segment
    client = sync_client(url)
    client.identify("u1", {"email": "a@x.io", "plan": "pro"})
    client.track("u1", "Signed Up", {"source": "ad"})
    client.page("u1", "Docs", "Install", {"path": "/install"})
    client.screen(anonymous_id="a1", name="Home")
    client.group("u1", "g1", {"seats": 3})
    client.alias("a1", "u1")

    state = emulator.state()
    assert state["profiles"] == {"u1": {"email": "a@x.io", "plan": "pro"}}
    assert [(e["type"], e.get("event"), e.get("name")) for e in state["events"]] == [
        ("track", "Signed Up", None), ("page", None, "Install"), ("screen", None, "Home")]
    assert state["groups"] == {"g1": {"traits": {"seats": 3}, "members": ["u1"]}}
    assert state["aliases"] == [{"previousId": "a1", "userId": "u1"}]
    # The library sends the key twice, as Basic user and as body writeKey; neither is kept.
    assert all("writeKey" not in e for e in state["events"])
    assert state["events"][0]["context"]["library"]["name"] == "analytics-python"
    stats = state["stats"]
    assert stats["messages_accepted"] == 6 and stats["contract_violations"] == []
    assert stats["status"] == {"200": 6}


def test_a_repeated_message_id_is_applied_once(segment) -> None:
    emulator, url = segment
    client = sync_client(url)
    for _ in range(2):
        client.track("u1", "Upgraded", {"plan": "pro"}, message_id="m-1")

    state = emulator.state()
    assert [e["messageId"] for e in state["events"]] == ["m-1"]
    assert state["stats"]["duplicates"] == 1


def test_the_background_thread_batches_gzips_and_flushes(segment) -> None:
    emulator, url = segment
    errors: list[Any] = []
    client = Client(KEY, host=url, gzip=True, upload_size=50, upload_interval=0.05,
                    timeout=5, max_retries=0, on_error=lambda e, batch: errors.append(e))
    for i in range(120):
        client.identify(f"u{i}", {"n": i})
    finishes_within(30, client.shutdown)

    state = emulator.state()
    assert errors == []
    assert len(state["profiles"]) == 120 and state["profiles"]["u7"] == {"n": 7}
    assert state["stats"]["batches_accepted"] >= 3  # 50 messages a batch at most


def test_the_librarys_batch_size_limit_fits_the_emulators(segment) -> None:
    emulator, url = segment
    errors: list[Any] = []
    client = Client(KEY, host=url, upload_interval=0.2, timeout=5, max_retries=0,
                    on_error=lambda e, batch: errors.append(e))
    for i in range(20):  # ~30 KB each: 600 KB in all, over the 500 KB of one request
        client.identify(f"u{i}", {"blob": "x" * 30_000})
    finishes_within(30, client.shutdown)

    state = emulator.state()
    assert errors == [] and len(state["profiles"]) == 20
    assert state["stats"]["batches_accepted"] >= 2
    assert state["stats"]["contract_violations"] == []


def test_a_wrong_write_key_is_answered_200_and_its_events_dropped(segment) -> None:
    emulator, url = segment
    ok, _ = sync_client(url, key="not-the-key").identify("u1", {"plan": "pro"})

    assert ok  # the library, like Segment, reports nothing wrong
    state = emulator.state()
    assert state["profiles"] == {} and state["stats"]["unauthorized"] == 1
    assert state["stats"]["status"] == {"200": 1}


def test_the_strict_auth_knob_refuses_in_the_shape_the_library_reads() -> None:
    emulator = SegmentEmulator(write_keys={KEY}, flavor="segment", strict_auth=True)
    with served(build_segment_app(emulator)) as url:
        with pytest.raises(APIError) as refused:
            sync_client(url, key="not-the-key").identify("u1", {"plan": "pro"})

    assert refused.value.status == 401
    assert refused.value.code == "unauthorized"  # "unknown" when the body is not {code, message}
    assert emulator.state()["profiles"] == {}


def test_a_429_carries_a_retry_after_the_library_reads(segment) -> None:
    emulator, url = segment
    emulator.set_faults(rate_429=1.0, retry_after=2)
    with pytest.raises(APIError) as limited:
        sync_client(url).track("u1", "Signed Up")

    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert parse_retry_after(limited.value.response) == 2
    assert emulator.state()["events"] == []


def test_a_server_error_names_itself_to_the_library(segment) -> None:
    emulator, url = segment
    emulator.set_faults(error_rate=1.0)
    with pytest.raises(APIError) as failed:
        sync_client(url).track("u1", "Signed Up")

    assert (failed.value.status, failed.value.code) == (500, "internal_error")
    emulator.set_faults(error_rate=0)
    sync_client(url).track("u1", "Signed Up")
    assert len(emulator.state()["events"]) == 1
