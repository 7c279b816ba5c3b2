"""The Conversion emulator, driven over real HTTP the way our client drives it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.conversion import ConversionEmulator, build_conversion_app

KEY = "sk_live_test_secret"
Serve = Callable[..., tuple[httpx.Client, ConversionEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(**args: Any) -> tuple[httpx.Client, ConversionEmulator]:
        args.setdefault("keys", {KEY})
        emulator = ConversionEmulator(**args)
        server = EmulatorServer(build_conversion_app(emulator)).start()
        client = httpx.Client(base_url=server.url, timeout=5, headers={"X-API-Key": KEY})
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def contacts(client: httpx.Client, *items: dict[str, Any], **options: Any) -> httpx.Response:
    return client.post("/v2/contacts/batch", json={"contacts": list(items), **options})


def results(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["results"]


def test_auth_is_the_x_api_key_header(serve: Serve) -> None:
    client, emulator = serve()
    url = str(client.base_url)
    body = {"contacts": [{"email": "a@x.io"}]}
    for headers in ({}, {"X-API-Key": "sk_live_wrong"}, {"Authorization": f"Bearer {KEY}"}):
        answer = httpx.post(f"{url}/v2/contacts/batch", json=body, headers=headers)
        assert answer.status_code == 401 and "message" in answer.json()
        assert "sk_live_wrong" not in answer.text
    assert emulator.contacts() == {}
    assert client.post("/v2/exports/contacts", json={"limit": 1}).status_code == 200


def test_contacts_match_by_user_id_then_email_and_only_email_creates(serve: Serve) -> None:
    client, emulator = serve()
    [a] = results(contacts(client, {"email": "a@x.io", "userId": "u1",
                                    "fields": {"plan": "free"}, "companyFields": {"size": 5}}))
    assert a["success"] and a["contactCreated"] and a["cnvContactId"]

    moved, by_email, no_email = results(contacts(
        client,
        {"userId": "u1", "email": "a.new@x.io", "fields": {"plan": "pro"}},  # found by userId
        {"email": "b@x.io", "fields": {"plan": "free"}},
        {"userId": "u9", "fields": {}},
    ))
    assert moved["cnvContactId"] == a["cnvContactId"] and not moved["contactCreated"]
    assert by_email["contactCreated"]
    assert no_email == {"success": False, "error": "email_required",
                        "message": "an email is required to create a contact"}
    got = emulator.contacts()
    assert set(got) == {"a.new@x.io", "b@x.io"}
    assert got["a.new@x.io"]["fields"] == {"plan": "pro"}
    assert got["a.new@x.io"]["companyFields"] == {"size": 5}


def test_item_errors_do_not_fail_the_batch(serve: Serve) -> None:
    client, emulator = serve()
    results(contacts(client, {"email": "a@x.io", "userId": "u1"}))
    bad_email, conflict, ok, missing, status = results(contacts(
        client,
        {"email": "not-an-email"},
        {"email": "a@x.io", "userId": "u2"},  # a@x.io belongs to u1
        {"email": "c@x.io"},
        {"fields": {"plan": "x"}},
        {"email": "d@x.io", "subscriptionStatus": "MAYBE"},
    ))
    assert bad_email["error"] == "invalid_email" and not bad_email["success"]
    assert conflict["error"] == "conflicting_identifier"
    assert ok["success"]
    assert missing["error"] == "missing_identifier"
    assert status["error"] == "invalid_subscription_status"
    assert set(emulator.contacts()) == {"a@x.io", "c@x.io"}
    [miss] = results(contacts(client, {"email": "z@x.io"}, updateOnly=True))
    assert miss["error"] == "contact_not_found"


def test_whole_request_limits_are_400_with_a_message(serve: Serve) -> None:
    client, _ = serve()
    too_many = contacts(client, *[{"email": f"p{i}@x.io"} for i in range(1001)])
    assert too_many.status_code == 400 and "1000" in too_many.json()["message"]
    assert contacts(client).status_code == 400
    assert client.post("/v2/contacts/batch", content=b"{nope").status_code == 400
    events = client.post("/v2/events/batch", json={"events": [{"email": "a@x.io"}] * 201})
    assert events.status_code == 400


def test_events_need_an_existing_contact_and_a_repeated_event_id_updates(serve: Serve) -> None:
    client, emulator = serve()
    [c] = results(contacts(client, {"email": "a@x.io", "userId": "u1"}))
    event = {"userId": "u1", "event": "Signed In", "eventId": "e1",
             "timestamp": "2026-01-02T03:04:05.000Z", "data": {"plan": "pro"}}
    answer = client.post("/v2/events/batch", json={"events": [
        event, {"email": "nobody@x.io", "event": "X"}, {"userId": "u1"},
        {"userId": "u1", "event_name": "X"},  # the name field is `event`
        {"userId": "u1", "event": "X", "timestamp": "yesterday"}]})
    assert answer.status_code == 200  # a partial failure does not fail the request
    body = answer.json()["data"]
    assert (body["processed"], body["tracked"], body["failed"]) == (5, 1, 4)
    first, *failed = body["results"]
    assert first == {"success": True, "cnvEventId": first["cnvEventId"],
                     "cnvContactId": c["cnvContactId"]} and first["cnvEventId"]
    assert [(r["success"], r["error"]["code"]) for r in failed] == [
        (False, "contact_not_found"), (False, "missing_event"), (False, "missing_event"),
        (False, "invalid_timestamp")]
    assert failed[1]["error"]["message"] == "event is required"

    again = client.post("/v2/events/batch", json={"events": [{**event, "event": "Signed Out"}]})
    [updated] = again.json()["data"]["results"]
    assert updated["cnvEventId"] == first["cnvEventId"]  # the same event, updated in place
    events = emulator.events()
    assert list(events) == ["e1"] and events["e1"]["event"] == "Signed Out"
    stats = emulator.state()["stats"]
    assert (stats["events_created"], stats["events_updated"]) == (1, 1)


def test_custom_objects_relate_to_a_contact(serve: Serve) -> None:
    client, emulator = serve()
    [c] = results(contacts(client, {"email": "a@x.io", "userId": "u1"}))
    answer = client.post("/v2/objects/subscription/batch", json={"objects": [
        {"id": "s1", "userId": "u1", "fields": {"plan": "pro"},
         "relationshipFields": {"role": "owner"}},
        {"id": "s2", "email": "nobody@x.io"},
        {"userId": "u1"},
    ]})
    first, orphan, no_id = answer.json()["data"]["results"]
    assert first["success"] and first["objectCreated"] and first["cnvObjectId"]
    assert (orphan["error"], no_id["error"]) == ("contact_not_found", "missing_id")
    assert emulator.objects("subscription") == {"s1": {
        "id": "s1", "fields": {"plan": "pro"}, "cnvObjectId": first["cnvObjectId"],
        "relationships": {c["cnvContactId"]: {"role": "owner"}}}}


def test_delete_and_read_by_email(serve: Serve) -> None:
    client, emulator = serve()
    results(contacts(client, {"email": "a+tag@x.io", "userId": "u1"}))
    path = "/v1/contacts/by-email/a%2Btag@x.io"
    assert client.get(path).json()["data"]["userId"] == "u1"
    assert client.delete(path).status_code == 200
    assert client.delete(path).status_code == 404
    assert client.get(path).status_code == 404
    assert emulator.contacts() == {}
    # userId u1 is free again: a new contact is created for it.
    [again] = results(contacts(client, {"email": "a@x.io", "userId": "u1"}))
    assert again["contactCreated"]


def test_rate_limit_answers_429_and_counts_the_window(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(3, 10.0))
    statuses = [client.post("/v2/exports/contacts", json={"limit": 1}).status_code
                for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = client.post("/v2/exports/contacts", json={"limit": 1})
    assert "Retry-After" not in limited.headers and limited.json()["message"]
    assert emulator.state()["stats"]["max_requests_in_window"] == 6


def test_faults(serve: Serve) -> None:
    client, emulator = serve()
    emulator.set_faults(dead=True)
    assert contacts(client, {"email": "a@x.io"}).status_code == 503
    emulator.set_faults(dead=False, error_rate=1.0)
    assert contacts(client, {"email": "a@x.io"}).status_code == 500
    emulator.set_faults(error_rate=0.0, poison={"path": "fields.plan", "value": "bad"})
    [poisoned] = results(contacts(client, {"email": "a@x.io", "fields": {"plan": "bad"}}))
    assert not poisoned["success"]
