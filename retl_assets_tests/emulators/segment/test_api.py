"""The Segment / Customer.io emulator, driven over real HTTP like a delivery client would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, SegmentEmulator, build_segment_app
from retl_assets.emulators.common import Faults

KEY = "wk_test"

Serve = Callable[..., tuple[httpx.Client, SegmentEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start an emulator on a free port; every server and client is closed after the test."""
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(key: str | None = KEY, **emulator_args: Any) -> tuple[httpx.Client, SegmentEmulator]:
        emulator_args.setdefault("write_keys", {KEY})
        emulator = SegmentEmulator(**emulator_args)
        server = EmulatorServer(build_segment_app(emulator)).start()
        auth = (key, "") if key is not None else None
        client = httpx.Client(base_url=server.url, auth=auth, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def identify(user: str, message_id: str | None = None, **traits: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "identify", "userId": user, "traits": traits}
    if message_id is not None:
        message["messageId"] = message_id
    return message


def track(user: str, event: str | None, message_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "track", "userId": user, "properties": {"n": 1}}
    if event is not None:
        message["event"] = event
    if message_id is not None:
        message["messageId"] = message_id
    return message


def send(client: httpx.Client, *messages: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/batch", json={"batch": list(messages)})


def test_server_binds_a_real_port_and_stops(serve: Serve) -> None:
    app = build_segment_app(SegmentEmulator())
    with EmulatorServer(app) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/healthz").json() == {"ok": True}
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=1)


STRICT = {"X-Strict-Mode": "1"}
UNAUTHORIZED = {"code": "unauthorized", "message": "invalid or missing write key"}


def bad_credentials(url: str, batch: dict[str, Any], **headers: str) -> list[httpx.Response]:
    """No key, a wrong key, and the right key with a password (the key is the user name)."""
    return [httpx.post(f"{url}/v1/batch", json=batch, auth=auth, headers=headers)
            for auth in (None, ("secret-wrong-key", ""), (KEY, "pw"))]


def test_customerio_answers_a_bad_key_200_and_drops_it_unless_strict(serve: Serve) -> None:
    client, emulator = serve()
    url = str(client.base_url)
    batch = {"batch": [identify("u1", email="a@x.io")]}

    for dropped in bad_credentials(url, batch):
        assert (dropped.status_code, dropped.json()) == (200, {})
    for refused in bad_credentials(url, batch, **STRICT):
        assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
        assert "secret-wrong-key" not in refused.text
    right = client.post("/v1/batch", json=batch, headers=STRICT)

    assert (right.status_code, right.json()) == (200, {})
    state = emulator.state()
    assert state["profiles"] == {"u1": {"email": "a@x.io"}}
    assert state["stats"]["status"] == {"200": 4, "401": 3}
    assert state["stats"]["unauthorized"] == 3


def test_customerio_takes_the_key_as_a_bearer_token_too(serve: Serve) -> None:
    client, emulator = serve(key=None, write_keys={"pk_us_abc"})
    response = client.post("/v1/batch", json={"batch": [identify("u1", plan="pro")]},
                           headers={"Authorization": "Bearer pk_us_abc", **STRICT})

    assert response.status_code == 200
    assert emulator.state()["profiles"] == {"u1": {"plan": "pro"}}


def test_segment_answers_a_bad_key_200_and_ignores_strict_mode(serve: Serve) -> None:
    client, emulator = serve(flavor="segment")
    batch = {"batch": [identify("u1", email="a@x.io")]}

    for dropped in bad_credentials(str(client.base_url), batch, **STRICT):
        assert (dropped.status_code, dropped.json()) == (200, {"success": True})
    bearer = httpx.post(f"{client.base_url}/v1/batch", json=batch,
                        headers={"Authorization": f"Bearer {KEY}"})  # Segment: an OAuth token
    assert bearer.status_code == 200
    state = emulator.state()
    assert state["profiles"] == {} and state["stats"]["unauthorized"] == 4


def test_strict_auth_refuses_a_bad_segment_key_for_client_tests(serve: Serve) -> None:
    client, emulator = serve(flavor="segment", strict_auth=True)
    refused = bad_credentials(str(client.base_url), {"batch": [identify("u1")]})

    assert [(r.status_code, r.json()) for r in refused] == [(401, UNAUTHORIZED)] * 3
    assert send(client, identify("u1")).status_code == 200


def test_write_key_in_body_is_segment_only(serve: Serve) -> None:
    segment, seg = serve(key=None, flavor="segment")
    customerio, cio = serve(key=None, flavor="customerio")
    body = {"batch": [identify("u1", plan="pro")], "writeKey": KEY}

    accepted = segment.post("/v1/batch", json=body)
    assert (accepted.status_code, accepted.json()) == (200, {"success": True})
    assert seg.state()["profiles"] == {"u1": {"plan": "pro"}}
    assert customerio.post("/v1/batch", json=body, headers=STRICT).status_code == 401
    assert cio.state()["profiles"] == {}


def test_strict_mode_refuses_an_invalid_message_with_the_whole_batch(serve: Serve) -> None:
    client, emulator = serve()
    batch = {"batch": [track("u1", "Signed Up", "ok-1"), track("u1", None, "bad-1")]}
    response = client.post("/v1/batch", json=batch, headers=STRICT)

    assert response.status_code == 400
    assert response.json() == {"code": "invalid_request", "index": 1, "messageId": "bad-1",
                               "message": "track needs a non-empty event"}
    assert emulator.state()["events"] == []


def test_identify_merges_traits_into_the_profile(serve: Serve) -> None:
    client, emulator = serve()
    send(client, identify("u1", email="a@x.io", plan="free"))
    send(client, identify("u1", plan="pro"), identify("u2", email="b@x.io"))

    assert emulator.state()["profiles"] == {
        "u1": {"email": "a@x.io", "plan": "pro"},
        "u2": {"email": "b@x.io"},
    }


def test_a_repeated_message_id_is_counted_and_not_applied(serve: Serve) -> None:
    client, emulator = serve()
    send(client, track("u1", "Signed Up", "m-1"), track("u1", "Signed Up", "m-1"))
    send(client, track("u1", "Signed Up", "m-1"), track("u1", "Upgraded", "m-2"))

    state = emulator.state()
    assert [e["messageId"] for e in state["events"]] == ["m-1", "m-2"]
    assert state["stats"]["duplicates"] == 2
    assert state["stats"]["messages_accepted"] == 2


def test_track_without_event_is_dropped_and_recorded(serve: Serve) -> None:
    client, emulator = serve()
    response = send(client, track("u1", None, "bad-1"), track("u1", "Signed Up", "ok-1"))

    assert response.status_code == 200
    state = emulator.state()
    assert [e["messageId"] for e in state["events"]] == ["ok-1"]
    assert state["stats"]["contract_violations"] == [
        {"reason": "track needs a non-empty event", "messageId": "bad-1"}
    ]


def test_reject_invalid_batches_refuses_the_whole_batch(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(reject_invalid_batches=True))
    response = send(client, track("u1", "Signed Up", "ok-1"), track("u1", "", "bad-1"))

    assert response.status_code == 400
    assert response.json()["index"] == 1 and response.json()["messageId"] == "bad-1"
    state = emulator.state()
    assert state["events"] == [] and state["stats"]["batches_accepted"] == 0
    assert len(state["stats"]["contract_violations"]) == 1


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "identify", "traits": {}}, "identify needs userId or anonymousId"),
        ({"type": "group", "userId": "u1"}, "group needs groupId"),
        ({"type": "alias", "userId": "u1"}, "alias needs previousId and userId"),
        ({"type": "purchase", "userId": "u1"}, "invalid type 'purchase'"),
        ({"type": "page", "userId": "u1", "messageId": "x" * 100}, "messageId must be a string"),
        ({"type": "identify", "userId": "u1", "traits": {"b": "x" * 33_000}}, "message larger"),
    ],
)
def test_contract_rules(serve: Serve, message: dict[str, Any], reason: str) -> None:
    client, emulator = serve()
    assert send(client, message).status_code == 200

    state = emulator.state()
    assert state["profiles"] == {} and state["events"] == [] and state["groups"] == {}
    assert state["stats"]["contract_violations"][0]["reason"].startswith(reason)


def test_poison_refuses_the_batch_and_stores_nothing(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(poison={"path": "traits.email", "value": "bad@x.io"}))
    response = send(
        client,
        identify("u1", "m-1", email="a@x.io"),
        identify("u2", "m-2", email="bad@x.io"),
        identify("u3", "m-3", email="c@x.io"),
    )

    assert response.status_code == 400
    assert response.json()["index"] == 1 and response.json()["messageId"] == "m-2"
    state = emulator.state()
    assert state["profiles"] == {} and state["stats"]["messages_accepted"] == 0
    # Nothing was marked as seen: the good messages go through when resent without the poison.
    assert send(client, identify("u1", "m-1", email="a@x.io")).status_code == 200
    assert emulator.state()["profiles"] == {"u1": {"email": "a@x.io"}}


def test_injected_429_carries_retry_after(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(rate_429=1.0, retry_after=0.05))
    response = send(client, identify("u1", email="a@x.io"))

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.05"
    emulator.set_faults(rate_429=0)
    assert send(client, identify("u1", email="a@x.io")).status_code == 200


def test_error_rate_one_answers_500_before_auth(serve: Serve) -> None:
    client, emulator = serve(key="not-the-key", faults=Faults(error_rate=1.0))
    response = send(client, identify("u1", email="a@x.io"))

    assert response.status_code == 500
    assert emulator.state()["profiles"] == {}


def test_dead_answers_503_and_latency_delays(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(dead=True))
    assert send(client, identify("u1")).status_code == 503

    emulator.set_faults(dead=False, latency_ms=150)
    started = time.monotonic()
    assert send(client, identify("u1")).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_same_seed_gives_the_same_fault_sequence(serve: Serve) -> None:
    def statuses() -> list[int]:
        client, _ = serve(seed=7, faults=Faults(error_rate=0.5))
        return [send(client, identify("u1")).status_code for _ in range(12)]

    first, second = statuses(), statuses()
    assert first == second and {200, 500} == set(first)


def test_oversize_request_segment_answers_400(serve: Serve) -> None:
    client, emulator = serve(flavor="segment")
    big = [identify(f"u{i}", blob="x" * 30_000) for i in range(20)]  # ~600 KB, each < 32 KB
    response = send(client, *big)

    assert (response.status_code, response.json()) == (
        400, {"code": "payload_too_large", "message": "batch too large"})
    state = emulator.state()
    assert state["profiles"] == {}
    assert state["stats"]["contract_violations"][0]["reason"] == "request larger than 500 KB"


def test_oversize_request_customerio_answers_200_and_drops_it(serve: Serve) -> None:
    client, emulator = serve(flavor="customerio")
    big = [identify(f"u{i}", blob="x" * 30_000) for i in range(20)]
    response = send(client, *big)

    assert (response.status_code, response.json()) == (200, {})
    state = emulator.state()
    assert state["profiles"] == {} and state["stats"]["batches_accepted"] == 0
    assert state["stats"]["contract_violations"][0]["reason"] == "request larger than 500 KB"
    # Strict mode answers what it would otherwise drop.
    strict = client.post("/v1/batch", json={"batch": big}, headers=STRICT)
    assert (strict.status_code, strict.json()["code"]) == (400, "payload_too_large")


def test_segment_refuses_more_than_2500_messages(serve: Serve) -> None:
    client, emulator = serve(flavor="segment")
    response = send(client, *[{"type": "page", "userId": "u"}] * 2501)

    assert response.status_code == 400
    assert emulator.state()["events"] == []


def test_malformed_json_is_400(serve: Serve) -> None:
    client, _ = serve()
    response = client.post(
        "/v1/batch", content=b'{"batch": [', headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (
        400, {"code": "invalid_json", "message": "invalid JSON"})


def test_rate_limit_answers_429_once_exceeded(serve: Serve) -> None:
    client, _ = serve(flavor="segment", rate_limit=(2, 0.5))
    codes = [send(client, identify("u1")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]

    limited = send(client, identify("u1"))
    wait = float(limited.headers["Retry-After"])
    assert limited.status_code == 429 and 0 < wait <= 0.5
    assert limited.headers["X-RateLimit-Reset"] == limited.headers["Retry-After"]
    time.sleep(wait + 0.02)
    assert send(client, identify("u1")).status_code == 200


def test_single_call_routes_imply_the_type(serve: Serve) -> None:
    client, emulator = serve()
    assert client.post("/v1/track", json={"userId": "u1", "event": "Signed Up"}).status_code == 200
    client.post("/v1/screen", json={"anonymousId": "a1", "name": "Home"})
    client.post("/v1/group", json={"userId": "u1", "groupId": "g1", "traits": {"plan": "pro"}})
    client.post("/v1/group", json={"userId": "u2", "groupId": "g1", "traits": {"seats": 3}})
    client.post("/v1/alias", json={"previousId": "a1", "userId": "u1"})
    assert client.post("/v1/identify", json={"traits": {"x": 1}}).status_code == 200  # dropped

    state = emulator.state()
    assert [(e["type"], e.get("event")) for e in state["events"]] == [
        ("track", "Signed Up"),
        ("screen", None),
    ]
    assert state["groups"] == {
        "g1": {"traits": {"plan": "pro", "seats": 3}, "members": ["u1", "u2"]}
    }
    assert state["aliases"] == [{"previousId": "a1", "userId": "u1"}]
    assert state["profiles"] == {}
    assert len(state["stats"]["contract_violations"]) == 1


def test_admin_routes_state_faults_reset(serve: Serve) -> None:
    client, emulator = serve()
    admin = httpx.Client(base_url=client.base_url)  # admin routes need no key
    try:
        send(client, identify("u1", "m-1", email="a@x.io"))
        state = admin.get("/_emulator/state").json()
        assert state["profiles"] == {"u1": {"email": "a@x.io"}}
        assert state["stats"]["requests"] == 1 and state["stats"]["status"] == {"200": 1}

        faults = admin.post("/_emulator/faults", json={"latency_ms": 5, "retry_after": 0.2})
        assert faults.json()["latency_ms"] == 5 and faults.json()["retry_after"] == 0.2
        assert faults.json()["error_rate"] == 0  # a partial update leaves the rest alone
        assert admin.post("/_emulator/faults", json={"nope": 1}).status_code == 400

        assert admin.post("/_emulator/reset").status_code == 200
        state = admin.get("/_emulator/state").json()
        assert state["profiles"] == {} and state["stats"]["requests"] == 0
        assert emulator.faults.latency_ms == 5  # reset keeps the faults
        # The seen messageIds went too: the same message applies again after a reset.
        send(client, identify("u1", "m-1", email="a@x.io"))
        assert emulator.state()["profiles"] == {"u1": {"email": "a@x.io"}}
        assert admin.get("/healthz").json() == {"ok": True}
    finally:
        admin.close()
