"""The Braze emulator, driven over real HTTP the way a delivery client would drive it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, Faults
from retl_assets.emulators.braze import BrazeEmulator, build_braze_app

KEY = "braze-rest-key"
Serve = Callable[..., tuple[httpx.Client, BrazeEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(key: str | None = KEY, **args: Any) -> tuple[httpx.Client, BrazeEmulator]:
        args.setdefault("api_keys", {KEY})
        emulator = BrazeEmulator(**args)
        server = EmulatorServer(build_braze_app(emulator)).start()
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        client = httpx.Client(base_url=server.url, headers=headers, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def track(client: httpx.Client, **arrays: list[Any]) -> httpx.Response:
    return client.post("/users/track", json=arrays)


def test_a_missing_or_wrong_key_is_refused_without_echoing_it(serve: Serve) -> None:
    client, emulator = serve()
    url = str(client.base_url)
    body = {"attributes": [{"external_id": "u1", "plan": "pro"}]}
    for headers in ({}, {"Authorization": "Bearer not-the-key"}, {"Authorization": KEY}):
        answer = httpx.post(f"{url}/users/track", json=body, headers=headers)
        assert answer.status_code == 401
        assert "not-the-key" not in answer.text
    assert emulator.users() == []


def test_attributes_create_then_update_a_user_by_external_id(serve: Serve) -> None:
    client, emulator = serve()
    first = track(client, attributes=[{"external_id": "u1", "plan": "free", "email": "a@x.io"}])
    assert first.status_code == 201
    assert first.json() == {"message": "success", "attributes_processed": 1}
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert header in first.headers
    assert first.headers["X-RateLimit-Limit"] == "3000"
    track(client, attributes=[{"external_id": "u1", "plan": "pro", "email": None}])
    assert emulator.records() == {"u1": {"plan": "pro"}}  # null removed the email
    stats = emulator.state()["stats"]
    assert (stats["created"], stats["updated"]) == (1, 1)


def test_an_email_identifies_a_user_and_an_unknown_email_creates_one(serve: Serve) -> None:
    client, emulator = serve()
    track(client, attributes=[{"external_id": "u1", "email": "a@x.io", "plan": "free"}])
    track(client, attributes=[{"email": "a@x.io", "plan": "pro"},
                              {"email": "new@x.io", "plan": "free"}])
    assert emulator.records() == {"u1": {"email": "a@x.io", "plan": "pro"},
                                  "new@x.io": {"email": "new@x.io", "plan": "free"}}


def test_bad_objects_are_named_per_item_and_the_rest_are_applied(serve: Serve) -> None:
    client, emulator = serve()
    answer = track(client, attributes=[
        {"external_id": "u1", "plan": "pro"},
        {"external_id": "u2", "email": "not-an-email"},
        {"plan": "no identifier"},
    ], events=[{"external_id": "u1", "name": "Signed In"}])
    assert answer.status_code == 201
    body = answer.json()
    assert body["message"] == "success" and body["attributes_processed"] == 1
    errors = {(e["input_array"], e["index"]): e["type"] for e in body["errors"]}
    assert set(errors) == {("attributes", 1), ("attributes", 2), ("events", 0)}
    assert "email" in errors[("attributes", 1)]
    assert "required" in errors[("attributes", 2)]
    assert "time" in errors[("events", 0)]
    assert emulator.records() == {"u1": {"plan": "pro"}}


def test_no_valid_object_is_a_400_that_still_names_each_one(serve: Serve) -> None:
    client, emulator = serve()
    answer = track(client, attributes=[{"external_id": "u1", "email": "bad"},
                                       {"plan": "no identifier"}])
    assert answer.status_code == 400
    body = answer.json()
    assert body["message"] == ("Valid data must be provided in the 'attributes', 'events', "
                               "or 'purchases' fields.")
    assert [(e["input_array"], e["index"]) for e in body["errors"]] == [
        ("attributes", 0), ("attributes", 1)]
    assert "email" in body["errors"][0]["type"]
    assert emulator.users() == []
    assert emulator.state()["stats"]["objects_refused"] == 2


def test_more_than_75_objects_is_a_fatal_400_and_nothing_is_stored(serve: Serve) -> None:
    client, emulator = serve()
    answer = track(client, attributes=[{"external_id": f"u{i}"} for i in range(50)],
                   events=[{"external_id": f"u{i}", "name": "E", "time": "2026-01-01T00:00:00Z"}
                           for i in range(26)])
    assert answer.status_code == 400
    assert answer.json()["message"] == "Max Input Length Exceeded"
    assert emulator.users() == []
    assert emulator.state()["stats"]["contract_violations"]


def test_events_land_on_their_user_and_are_never_deduplicated(serve: Serve) -> None:
    client, emulator = serve()
    event = {"external_id": "u1", "name": "Upgraded", "time": "2026-01-01T10:00:00.000Z",
             "properties": {"plan": "pro"}}
    assert track(client, events=[event, event]).json()["events_processed"] == 2
    [user] = emulator.users()
    assert user["external_id"] == "u1" and len(user["events"]) == 2
    assert user["events"][0] == {k: event[k] for k in ("name", "time", "properties")}


def test_update_existing_only_creates_nobody(serve: Serve) -> None:
    client, emulator = serve()
    answer = track(client, attributes=[{"external_id": "ghost", "_update_existing_only": True}])
    assert answer.status_code == 201
    assert emulator.users() == []


def test_update_only_updates_who_exists_and_the_answer_does_not_tell_them_apart(
        serve: Serve) -> None:
    client, emulator = serve()
    track(client, attributes=[{"external_id": "u1", "plan": "free"},
                              {"email": "known@x.io", "plan": "free"}])
    answer = track(client, attributes=[
        {"external_id": "u1", "plan": "pro", "_update_existing_only": True},
        {"external_id": "ghost", "plan": "pro", "_update_existing_only": True},
        {"email": "known@x.io", "plan": "pro", "_update_existing_only": True},
        {"email": "nobody@x.io", "plan": "pro", "_update_existing_only": True},
    ], events=[{"external_id": "ghost", "name": "E", "time": "2026-01-01T00:00:00Z",
                "_update_existing_only": True},
               {"external_id": "u1", "name": "E", "time": "2026-01-01T00:00:00Z",
                "_update_existing_only": True}])
    # Braze counts objects queued, found or not, and names no error for a missing user.
    assert answer.status_code == 201
    assert answer.json() == {"message": "success", "attributes_processed": 4,
                             "events_processed": 2}
    assert emulator.records() == {"u1": {"plan": "pro"},
                                  "known@x.io": {"email": "known@x.io", "plan": "pro"}}
    [u1] = [u for u in emulator.users() if u["external_id"] == "u1"]
    assert len(u1["events"]) == 1 and "_update_existing_only" not in u1["attributes"]
    stats = emulator.state()["stats"]
    assert (stats["created"], stats["updated"], stats["skipped"], stats["events"]) == (2, 2, 3, 1)


def test_a_user_alias_is_update_only_unless_told_otherwise(serve: Serve) -> None:
    client, emulator = serve()
    alias = {"alias_name": "device1", "alias_label": "device"}
    track(client, attributes=[{"user_alias": alias, "plan": "free"}])
    assert emulator.users() == [] and emulator.state()["stats"]["skipped"] == 1
    track(client, attributes=[{"user_alias": alias, "plan": "free",
                               "_update_existing_only": False}])
    track(client, attributes=[{"user_alias": alias, "plan": "pro"}])
    [user] = emulator.users()
    assert user["user_alias"] == "device:device1" and user["attributes"] == {"plan": "pro"}


def test_delete_takes_up_to_50_ids_of_one_kind(serve: Serve) -> None:
    client, emulator = serve()
    track(client, attributes=[{"external_id": f"u{i}"} for i in range(3)])
    track(client, attributes=[{"email": "only@x.io"}])
    deleted = client.post("/users/delete", json={"external_ids": ["u0", "u1", "nobody"]})
    assert deleted.status_code == 201 and deleted.json()["deleted"] == 2
    by_email = client.post("/users/delete", json={"email_addresses": [
        {"email": "only@x.io", "prioritization": ["unidentified", "most_recently_updated"]}]})
    assert by_email.json()["deleted"] == 1
    assert set(emulator.records()) == {"u2"}
    too_many = client.post("/users/delete", json={"external_ids": [str(i) for i in range(51)]})
    mixed = client.post("/users/delete", json={"external_ids": ["u2"], "braze_ids": ["b1"]})
    no_order = client.post("/users/delete", json={"email_addresses": [{"email": "a@x.io"}]})
    assert [r.status_code for r in (too_many, mixed, no_order)] == [400, 400, 400]
    assert "max number" in too_many.json()["message"]
    assert set(emulator.records()) == {"u2"}


def test_the_rate_window_answers_429_with_a_reset_and_counts_every_arrival(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(2, 1.0))
    answers = [track(client, attributes=[{"external_id": "u1"}]) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    limited = answers[2]
    assert "Retry-After" not in limited.headers  # Braze documents none
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert emulator.state()["stats"]["max_requests_in_window"] == 3
    # /users/delete has its own window.
    assert client.post("/users/delete", json={"external_ids": ["u1"]}).status_code == 201


def test_faults_dead_and_whole_batch_refusal(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(reject_invalid_batches=True))
    answer = track(client, attributes=[{"external_id": "u1"}, {"external_id": "u2",
                                                               "email": "bad"}])
    assert answer.status_code == 400 and answer.json()["errors"][0]["index"] == 1
    assert emulator.users() == []
    emulator.set_faults(dead=True)
    assert track(client, attributes=[{"external_id": "u1"}]).status_code == 503
