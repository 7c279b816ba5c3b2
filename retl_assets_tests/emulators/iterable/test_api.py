"""The Iterable emulator, driven over real HTTP the way a delivery client would drive it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, Faults
from retl_assets.emulators.iterable import IterableEmulator, build_iterable_app

KEY = "iterable-key"
Serve = Callable[..., tuple[httpx.Client, IterableEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(key: str | None = KEY, **args: Any) -> tuple[httpx.Client, IterableEmulator]:
        args.setdefault("api_keys", {KEY})
        emulator = IterableEmulator(**args)
        server = EmulatorServer(build_iterable_app(emulator)).start()
        headers = {"Api-Key": key} if key is not None else {}
        client = httpx.Client(base_url=server.url, headers=headers, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def bulk(client: httpx.Client, *users: dict[str, Any]) -> httpx.Response:
    return client.post("/api/users/bulkUpdate", json={"users": list(users)})


def track(client: httpx.Client, *events: dict[str, Any]) -> httpx.Response:
    return client.post("/api/events/trackBulk", json={"events": list(events)})


def test_a_missing_or_wrong_key_is_401_bad_api_key(serve: Serve) -> None:
    client, emulator = serve()
    url = str(client.base_url)
    for headers in ({}, {"Api-Key": "nope"}, {"Authorization": f"Bearer {KEY}"}):
        answer = httpx.get(f"{url}/api/channels", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["code"] == "BadApiKey" and "nope" not in answer.text
    assert client.get("/api/channels").json()["channels"]


def test_bulk_update_creates_then_overwrites_only_the_given_fields(serve: Serve) -> None:
    client, emulator = serve()
    first = bulk(client, {"email": "A@x.io", "dataFields": {"plan": "free", "seats": 1}},
                 {"userId": "u2", "dataFields": {"plan": "pro"}})
    assert first.status_code == 200
    body = first.json()
    assert (body["successCount"], body["failCount"]) == (2, 0)
    assert set(body["failedUpdates"]) >= {"invalidEmails", "invalidDataEmails",
                                          "invalidUserIds", "invalidDataUserIds"}
    bulk(client, {"email": "a@x.io", "dataFields": {"plan": "pro"}})
    assert emulator.records() == {"a@x.io": {"plan": "pro", "seats": 1}, "u2": {"plan": "pro"}}


def test_failed_users_are_listed_by_identifier_and_the_rest_apply(serve: Serve) -> None:
    client, emulator = serve()
    bulk(client, {"email": "a@x.io", "dataFields": {"seats": 1}})
    emulator.forget("gone@x.io")
    answer = bulk(client,
                  {"email": "not-an-email", "dataFields": {"plan": "pro"}},
                  {"email": "b@x.io", "dataFields": {"plan": "pro"}},
                  {"email": "a@x.io", "dataFields": {"seats": "many"}},  # a type change
                  {"userId": "u 1 ", "dataFields": {}},
                  {"email": "gone@x.io", "dataFields": {}}).json()
    assert (answer["successCount"], answer["failCount"]) == (1, 4)
    failed = answer["failedUpdates"]
    assert failed["invalidEmails"] == ["not-an-email"] == answer["invalidEmails"]
    assert failed["invalidDataEmails"] == ["a@x.io"]
    assert failed["invalidUserIds"] == ["u 1 "]
    assert failed["forgottenEmails"] == ["gone@x.io"]
    assert emulator.records() == {"a@x.io": {"seats": 1}, "b@x.io": {"plan": "pro"}}


def test_malformed_requests_are_400_and_store_nothing(serve: Serve) -> None:
    client, emulator = serve()
    neither = bulk(client, {"dataFields": {"plan": "pro"}})
    too_many = bulk(client, *[{"email": f"u{i}@x.io"} for i in range(1001)])
    mixed = bulk(client, {"email": "a@x.io", "dataFields": {"n": 1}},
                 {"email": "b@x.io", "dataFields": {"n": "one"}})
    no_name = track(client, {"email": "a@x.io"})
    codes = [r.json()["code"] for r in (neither, too_many, mixed, no_name)]
    assert codes == ["BadParams", "BatchTooLarge", "RequestFieldsTypesMismatched", "BadParams"]
    assert all(r.status_code == 400 for r in (neither, too_many, mixed, no_name))
    assert emulator.users() == []
    assert len(emulator.state()["stats"]["contract_violations"]) == 4


def test_email_and_user_id_together_follow_the_project_type(serve: Serve) -> None:
    # Email-based: email identifies the user, the userId beside it is updated (Iterable's
    # "Creating and Identifying Users with Iterable APIs"); userIds need not be unique.
    client, emulator = serve(project_type="email")
    bulk(client, {"email": "a@x.io", "userId": "u1", "dataFields": {"plan": "free"}})
    answer = bulk(client, {"email": "A@x.io", "userId": "u2", "dataFields": {"plan": "pro"}},
                  {"email": "b@x.io", "dataFields": {"userId": "u2"}},
                  {"userId": "nobody"}).json()
    assert (answer["successCount"], answer["failCount"]) == (2, 1)
    assert answer["failedUpdates"]["notFoundUserIds"] == ["nobody"]  # no preferUserId
    assert [(u["email"], u["userId"]) for u in emulator.users()] == [("a@x.io", "u2"),
                                                                      ("b@x.io", "u2")]
    made = bulk(client, {"userId": "u9", "preferUserId": True}).json()
    assert made["successCount"] == 1
    assert emulator.users()[-1]["email"].endswith("@placeholder.email")
    # Hybrid (the default): both are unique, so a userId another user holds is a conflict.
    client, emulator = serve()
    bulk(client, {"email": "a@x.io", "userId": "u1"}, {"email": "b@x.io"})
    answer = bulk(client, {"email": "b@x.io", "userId": "u1"}).json()
    assert answer["failedUpdates"]["conflictUserIds"] == ["u1"] and answer["failCount"] == 1
    # UserID-based: userId identifies, the email is updated; an email alone finds nobody.
    client, emulator = serve(project_type="userId")
    bulk(client, {"userId": "u1", "email": "a@x.io"})
    bulk(client, {"userId": "u1", "email": "new@x.io", "dataFields": {"plan": "pro"}})
    assert [(u["email"], u["userId"]) for u in emulator.users()] == [("new@x.io", "u1")]
    alone = bulk(client, {"email": "new@x.io"})
    assert alone.status_code == 400 and alone.json()["code"] == "BadParams"


def test_track_bulk_upserts_events_by_id(serve: Serve) -> None:
    client, emulator = serve(disallowed_event_names={"Banned"})
    event = {"email": "a@x.io", "eventName": "Upgraded", "id": "e1", "createdAt": 1767261600,
             "dataFields": {"plan": "pro"}}
    answer = track(client, event, {**event, "dataFields": {"plan": "enterprise"}},
                   {"email": "bad", "eventName": "Upgraded"},
                   {"userId": "u1", "eventName": "Banned"}).json()
    assert (answer["successCount"], answer["failCount"]) == (2, 2)
    assert answer["failedUpdates"]["invalidEmails"] == ["bad"]
    assert answer["disallowedEventNames"] == ["Banned"]
    [stored] = emulator.events()
    assert stored["id"] == "e1" and stored["dataFields"] == {"plan": "enterprise"}
    assert set(emulator.records()) == {"a@x.io"}  # an event for a new email creates the user
    bad_time = track(client, {**event, "createdAt": "2026-01-01"})
    assert bad_time.status_code == 400


def test_deletes_by_email_and_by_user_id(serve: Serve) -> None:
    client, emulator = serve()
    bulk(client, {"email": "a@x.io"}, {"userId": "u/2"}, {"email": "c@x.io"})
    assert client.delete("/api/users/a@x.io").json()["code"] == "Success"
    assert client.delete("/api/users/byUserId/u%2F2").status_code == 200
    assert client.delete("/api/users/nobody@x.io").status_code == 200  # asynchronous
    assert set(emulator.records()) == {"c@x.io"}
    assert emulator.state()["stats"]["deleted"] == 2


def test_each_endpoint_has_its_own_published_rate_limit(serve: Serve) -> None:
    client, emulator = serve()
    answers = [bulk(client, {"email": "a@x.io"}) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[-1].json()["code"] == "RateLimitExceeded"
    assert "Retry-After" not in answers[-1].headers
    assert track(client, {"email": "a@x.io", "eventName": "E"}).status_code == 200
    stats = emulator.state()["stats"]
    assert stats["max_requests_in_window_by_endpoint"] == {"bulkUpdate": 6, "trackBulk": 1}
    assert stats["max_requests_in_window"] == 6


def test_faults_dead_and_whole_batch_refusal(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(reject_invalid_batches=True))
    answer = bulk(client, {"email": "a@x.io"}, {"email": "bad"})
    assert answer.status_code == 400 and emulator.users() == []
    emulator.set_faults(dead=True)
    assert bulk(client, {"email": "a@x.io"}).status_code == 503
