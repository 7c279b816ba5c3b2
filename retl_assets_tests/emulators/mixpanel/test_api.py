"""The Mixpanel emulator, driven over real HTTP the way a delivery client would drive it."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, Faults
from retl_assets.emulators.mixpanel import MixpanelEmulator, build_mixpanel_app, make_app

TOKEN, SA, SECRET, PROJECT = "tok123", "sa.user", "sa-secret", "42"
NOW_MS = int(time.time() * 1000)

Serve = Callable[..., tuple[httpx.Client, MixpanelEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(**args: Any) -> tuple[httpx.Client, MixpanelEmulator]:
        args.setdefault("service_accounts", {SA: SECRET})
        emulator = MixpanelEmulator({TOKEN}, project_id=PROJECT, **args)
        server = EmulatorServer(build_mixpanel_app(emulator)).start()
        client = httpx.Client(base_url=server.url, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def event(n: int, **props: Any) -> dict[str, Any]:
    return {"event": "Signed In", "properties": {"time": NOW_MS - n, "distinct_id": f"u{n}",
                                                 "$insert_id": f"id-{n}", **props}}


def imp(client: httpx.Client, events: Any, auth=(SA, SECRET), project: str | None = PROJECT,
        **kw: Any) -> httpx.Response:
    params = {"strict": "1", **({"project_id": project} if project else {})}
    body = kw.pop("content", None)
    if body is None:
        return client.post("/import", params=params, json=events, auth=auth, **kw)
    return client.post("/import", params=params, content=body, auth=auth, **kw)


def engage(client: httpx.Client, updates: list, verbose: bool = True) -> httpx.Response:
    return client.post("/engage", params={"verbose": "1"} if verbose else {}, json=updates)


def test_import_needs_a_service_account_with_its_project_or_the_token(serve: Serve) -> None:
    client, emulator = serve()
    assert imp(client, [event(1)]).json() == {"code": 200, "num_records_imported": 1,
                                              "status": "OK"}
    assert imp(client, [event(2)], auth=(TOKEN, ""), project=None).status_code == 200
    for auth, project in [((SA, "wrong"), PROJECT), ((SA, SECRET), None),
                          ((SA, SECRET), "other"), (("nope", ""), None)]:
        refused = imp(client, [event(3)], auth=auth, project=project)
        assert refused.status_code == 401
        assert refused.json() == {"code": 401, "error": "Invalid credentials",
                                  "status": "Unauthorized"}
    assert client.post("/import", json=[event(3)]).status_code == 401
    assert len(emulator.events()) == 2


def test_a_strict_import_lists_failed_events_and_imports_the_rest(serve: Serve) -> None:
    client, emulator = serve()
    events = [event(1), event(2, time=0), event(3, distinct_id="undefined"),
              {"properties": event(4)["properties"]}, event(5, **{"$insert_id": "x" * 37}),
              event(6, time=NOW_MS + 2 * 3600 * 1000), event(7, time=NOW_MS // 1000)]
    answer = imp(client, events)
    assert answer.status_code == 400
    body = answer.json()
    assert (body["code"], body["status"], body["num_records_imported"]) == (400, "Bad Request", 2)
    failed = {f["index"]: (f["$insert_id"], f["field"]) for f in body["failed_records"]}
    assert failed == {1: ("id-2", "properties.time"), 2: ("id-3", "properties.distinct_id"),
                      3: ("id-4", "event"), 4: ("x" * 37, "properties.$insert_id"),
                      5: ("id-6", "properties.time")}
    assert sorted(e["properties"]["$insert_id"] for e in emulator.events()) == ["id-1", "id-7"]


def test_events_are_deduplicated_by_mixpanels_key(serve: Serve) -> None:
    client, emulator = serve()
    assert imp(client, [event(1), event(2)]).status_code == 200
    assert imp(client, [event(1)]).status_code == 200
    assert len(emulator.events()) == 2
    assert emulator.state()["stats"]["duplicates"] == 1


def test_ndjson_and_gzip_bodies_are_accepted(serve: Serve) -> None:
    client, emulator = serve()
    ndjson = "\n".join(json.dumps(event(n)) for n in range(3)).encode()
    assert imp(client, None, content=ndjson,
               headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    zipped = gzip.compress(json.dumps([event(9)]).encode())
    assert imp(client, None, content=zipped, headers={"Content-Encoding": "gzip",
                                                      "Content-Type": "application/json"}
               ).status_code == 200
    assert len(emulator.events()) == 4


def test_request_limits_answer_413_and_400(serve: Serve) -> None:
    client, emulator = serve()
    big = [event(1, blob="x" * (11 * 1024 * 1024))]
    too_large = imp(client, big)
    assert too_large.status_code == 413
    assert too_large.json()["status"] == "Request Entity Too Large"
    too_many = imp(client, [event(n) for n in range(2001)])
    assert too_many.status_code == 400
    assert emulator.events() == []
    assert len(emulator.state()["stats"]["contract_violations"]) == 2


def test_the_ingestion_limit_answers_429_without_retry_after(serve: Serve) -> None:
    client, emulator = serve(events_limit=(100, 60.0))
    assert imp(client, [event(n) for n in range(60)]).status_code == 200
    limited = imp(client, [event(n) for n in range(60, 120)])
    assert limited.status_code == 429
    assert limited.json() == {
        "code": 429, "status": "Too Many Requests",
        "error": "Project exceeded rate limits. Please retry the request with exponential backoff."}
    assert "retry-after" not in limited.headers
    stats = emulator.state()["stats"]
    assert (stats["rate_limited"], stats["max_events_in_window"]) == (1, 120)
    assert len(emulator.events()) == 60


def test_a_request_window_counts_every_arrival(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(2, 10.0))
    answers = [imp(client, [event(n)]).status_code for n in range(3)]
    assert answers == [200, 200, 429]
    assert emulator.state()["stats"]["max_requests_in_window"] == 3


def test_engage_sets_and_deletes_profiles_and_answers_verbosely(serve: Serve) -> None:
    client, emulator = serve()
    sets = [{"$token": TOKEN, "$distinct_id": f"u{n}", "$set": {"plan": "pro", "$email": f"{n}@x"}}
            for n in range(3)]
    assert engage(client, sets).json() == {"status": 1, "error": None}
    assert engage(client, [{"$token": TOKEN, "$distinct_id": "u1", "$delete": ""}]).json() \
        == {"status": 1, "error": None}
    assert emulator.profiles() == {"u0": {"plan": "pro", "$email": "0@x"},
                                   "u2": {"plan": "pro", "$email": "2@x"}}
    none_valid = engage(client, [{"$token": TOKEN, "$set": {"a": 1}}])
    assert none_valid.json() == {"status": 0, "error": "$distinct_id, missing or empty"}
    assert engage(client, sets[:1], verbose=False).text == "1"
    assert engage(client, [{"$token": TOKEN}], verbose=False).text == "0"
    stats = emulator.state()["stats"]
    assert (stats["profiles_created"], stats["profiles_updated"], stats["profiles_deleted"]) \
        == (3, 1, 1)


def test_engage_drops_invalid_updates_quietly_and_refuses_unknown_tokens(serve: Serve) -> None:
    client, emulator = serve()
    mixed = [{"$token": TOKEN, "$distinct_id": "ok", "$set": {"a": 1}},
             {"$token": TOKEN, "$distinct_id": "", "$set": {"a": 2}}]
    assert engage(client, mixed).json() == {"status": 1, "error": None}
    stats = emulator.state()["stats"]
    assert stats["updates_ignored"] == 1 and len(stats["contract_violations"]) == 1
    wrong = engage(client, [{"$token": "other", "$distinct_id": "x", "$set": {"a": 1}}])
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "Invalid project token", "status": "error"}
    assert emulator.profiles() == {"ok": {"a": 1}}


def test_app_me_reads_the_service_account(serve: Serve) -> None:
    client, _ = serve()
    me = client.get("/api/app/me", auth=(SA, SECRET))
    assert me.status_code == 200 and me.json()["results"]["user_name"] == SA
    assert client.get("/api/app/me", auth=(SA, "bad")).status_code == 401
    assert client.get("/api/app/me", auth=(TOKEN, "")).status_code == 401


def test_injected_faults_look_like_mixpanel(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(rate_429=1.0))
    limited = imp(client, [event(1)])
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["status"] == "Too Many Requests"
    emulator.set_faults(rate_429=0, dead=True)
    assert imp(client, [event(1)]).status_code == 503
    emulator.set_faults(dead=False, poison={"path": "properties.plan", "value": "bad"})
    poisoned = imp(client, [event(1), event(2, plan="bad")])
    assert poisoned.status_code == 400
    assert [f["index"] for f in poisoned.json()["failed_records"]] == [1]


def test_make_app_reads_tokens_and_service_accounts() -> None:
    app = make_app("mixpanel", {TOKEN, f"{SA}:{SECRET}"}, Faults(), None)
    emulator = app.state.emulator
    assert emulator.tokens == {TOKEN} and emulator.service_accounts == {SA: SECRET}
