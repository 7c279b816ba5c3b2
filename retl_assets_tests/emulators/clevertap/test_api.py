"""The CleverTap emulator, driven over real HTTP the way a delivery client would drive it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, Faults
from retl_assets.emulators.clevertap import CleverTapEmulator, build_clevertap_app, make_app

ACCOUNT, PASSCODE = "ACC-1", "pass-1"
HEADERS = {"X-CleverTap-Account-Id": ACCOUNT, "X-CleverTap-Passcode": PASSCODE}
TS = 1_767_225_600  # 2026-01-01, epoch seconds

Serve = Callable[..., tuple[httpx.Client, CleverTapEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(**args: Any) -> tuple[httpx.Client, CleverTapEmulator]:
        emulator = CleverTapEmulator({ACCOUNT: {PASSCODE}}, **args)
        server = EmulatorServer(build_clevertap_app(emulator)).start()
        client = httpx.Client(base_url=server.url, headers=HEADERS, timeout=10)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def profile(identity: Any, **data: Any) -> dict[str, Any]:
    return {"type": "profile", "identity": identity, "ts": TS, "profileData": data}


def event(identity: Any, name: Any = "Signed In", **data: Any) -> dict[str, Any]:
    return {"type": "event", "identity": identity, "evtName": name, "evtData": data, "ts": TS}


def upload(client: httpx.Client, *records: Any, **kw: Any) -> httpx.Response:
    return client.post("/1/upload", json={"d": list(records)}, **kw)


def test_upload_needs_the_account_id_and_passcode(serve: Serve) -> None:
    client, emulator = serve()
    for headers in ({}, {"X-CleverTap-Account-Id": ACCOUNT},
                    {"X-CleverTap-Account-Id": ACCOUNT, "X-CleverTap-Passcode": "wrong"},
                    {"X-CleverTap-Account-Id": "other", "X-CleverTap-Passcode": PASSCODE}):
        refused = httpx.post(f"{client.base_url}/1/upload", headers=headers,
                             json={"d": [profile("u1", Name="A")]})
        assert refused.status_code == 401
        assert refused.json()["status"] == "fail" and "wrong" not in refused.text
    assert emulator.profiles() == {}


def test_profiles_merge_by_identity_and_events_are_kept(serve: Serve) -> None:
    client, emulator = serve()
    first = upload(client, profile("u1", Name="Ann", Email="ann@x.io"), event("u1", plan="pro"))
    assert first.json() == {"status": "success", "processed": 2, "unprocessed": []}
    upload(client, profile("u1", plan="pro"))
    assert emulator.profiles() == {"u1": {"Name": "Ann", "Email": "ann@x.io", "plan": "pro"}}
    assert emulator.events() == [{"who": "identity:u1", "evtName": "Signed In",
                                  "evtData": {"plan": "pro"}, "ts": TS}]
    stats = emulator.state()["stats"]
    assert (stats["profiles_created"], stats["profiles_updated"], stats["events_uploaded"]) \
        == (1, 1, 1)


def test_each_bad_record_is_unprocessed_with_its_code_and_echo(serve: Serve) -> None:
    client, emulator = serve()
    records = [
        profile("ok", Name="Fine"),
        profile(None, Name="No one"),
        profile("u2", Email="not-an-email"),
        profile("u3", Phone="555-1234"),
        profile("u4", Gender="X"),
        event("u5", name=""),
        {**event("u6"), "ts": TS * 1000},
        {"type": "purchase", "identity": "u7"},
        event("u8", name="App Launched"),
        profile("u9", **{"k" * 121: "v"}),
        profile("u10", note="v" * 513),
    ]
    body = upload(client, *records).json()
    assert (body["status"], body["processed"]) == ("partial", 1)
    codes = [(u["code"], u["record"]) for u in body["unprocessed"]]
    assert [c for c, _ in codes] == [523, 515, 516, 514, 509, 525, 524, 513, 555, 555]
    assert [r for _, r in codes] == records[1:]
    assert all(u["status"] == "fail" and u["error"] for u in body["unprocessed"])
    assert emulator.profiles() == {"ok": {"Name": "Fine"}}


def test_an_event_needs_an_evt_data_object(serve: Serve) -> None:
    # CleverTap's own Node library refuses an event without evtData before sending it.
    client, emulator = serve()
    bare = {"type": "event", "identity": "u1", "evtName": "Signed In", "ts": TS}
    body = upload(client, bare, {**bare, "evtData": []}, {**bare, "evtData": {}}).json()
    assert [u["code"] for u in body["unprocessed"]] == [512, 512]
    assert [e["evtData"] for e in emulator.events()] == [{}]


def test_a_request_with_only_bad_records_fails(serve: Serve) -> None:
    client, _ = serve()
    body = upload(client, profile(""), event("u1", name=None)).json()
    assert (body["status"], body["processed"], len(body["unprocessed"])) == ("fail", 0, 2)


def test_malformed_or_oversized_requests_answer_400(serve: Serve) -> None:
    client, emulator = serve()
    assert client.post("/1/upload", json=[profile("u1")]).status_code == 400
    assert client.post("/1/upload", content=b"{not json").status_code == 400
    too_many = upload(client, *[profile(f"u{n}", Name="x") for n in range(1001)])
    assert too_many.status_code == 400
    assert emulator.profiles() == {}
    assert len(emulator.state()["stats"]["contract_violations"]) == 3


def test_more_than_fifteen_requests_in_flight_answer_429(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(latency_ms=500))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url), headers=HEADERS,
                                     timeout=10) as ac:
            return await asyncio.gather(*[
                ac.post("/1/upload", json={"d": [profile(f"u{n}", Name="x")]})
                for n in range(20)])

    answers = asyncio.run(burst())
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) == 5
    assert limited[0].json() == {"status": "fail", "error": "Too many concurrent requests",
                                 "code": 429}
    assert "retry-after" not in limited[0].headers
    stats = emulator.state()["stats"]
    assert (stats["max_in_flight"], stats["rate_limited"]) == (20, 5)
    assert len(emulator.profiles()) == 15
    # Once they are answered, the slots are free again.
    assert upload(client, profile("later", Name="x")).status_code == 200


def test_get_profile_by_identity_reads_without_writing(serve: Serve) -> None:
    client, emulator = serve()
    upload(client, profile("u1", Name="Ann"))
    found = client.get("/1/profile.json", params={"identity": "u1"}).json()
    assert found == {"status": "success", "record": {"identity": "u1",
                                                     "profileData": {"Name": "Ann"}}}
    missing = client.get("/1/profile.json", params={"identity": "nobody"})
    assert missing.status_code == 200 and missing.json()["status"] == "fail"
    assert httpx.get(f"{client.base_url}/1/profile.json", params={"identity": "u1"}
                     ).status_code == 401
    assert list(emulator.profiles()) == ["u1"]


def test_injected_faults_look_like_clevertap(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(rate_429=1.0))
    limited = upload(client, profile("u1", Name="x"))
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    emulator.set_faults(rate_429=0, dead=True)
    assert upload(client, profile("u1", Name="x")).status_code == 503
    emulator.set_faults(dead=False, poison={"path": "profileData.Name", "value": "bad"})
    body = upload(client, profile("u1", Name="ok"), profile("u2", Name="bad")).json()
    assert [u["record"]["identity"] for u in body["unprocessed"]] == ["u2"]


def test_make_app_reads_account_passcode_pairs_and_a_concurrency_limit() -> None:
    app = make_app("clevertap", {"A:p1", "A:p2", "B:q"}, Faults(), (5, 1.0))
    emulator = app.state.emulator
    assert emulator.accounts == {"A": {"p1", "p2"}, "B": {"q"}}
    assert (emulator.max_concurrent, emulator.max_concurrent_deletes) == (5, 3)
    assert make_app("clevertap", None, Faults(), (2, 1.0)).state.emulator \
        .max_concurrent_deletes == 2


# -- Delete User Profile: POST /1/delete/profiles.json ----------------------------------------


def delete(client: httpx.Client, body: Any, **kw: Any) -> httpx.Response:
    return client.post("/1/delete/profiles.json", json=body, **kw)


def test_delete_removes_profiles_by_identity_or_guid(serve: Serve) -> None:
    client, emulator = serve()
    upload(client, profile("u1", Name="A"), profile("u2", Name="B"), profile("u3", Name="C"),
           {"type": "profile", "objectId": "ct-9", "ts": TS, "profileData": {"Name": "D"}})
    answer = delete(client, {"identity": ["u1", "u2", "nobody"]})
    assert answer.status_code == 200 and answer.json()["status"] == "success"
    assert delete(client, {"identity": "u3"}).status_code == 200  # a single value
    assert delete(client, {"guid": ["ct-9"]}).status_code == 200
    assert emulator.profiles() == {}
    stats = emulator.state()["stats"]
    assert (stats["delete_requests"], stats["profiles_deleted"]) == (3, 4)
    assert stats["delete_sizes"] == [3, 1, 1]


def test_delete_needs_the_account_id_and_passcode(serve: Serve) -> None:
    client, emulator = serve()
    upload(client, profile("u1", Name="A"))
    refused = httpx.post(f"{client.base_url}/1/delete/profiles.json",
                         headers={"X-CleverTap-Account-Id": ACCOUNT,
                                  "X-CleverTap-Passcode": "wrong"}, json={"identity": ["u1"]})
    assert refused.status_code == 401 and "wrong" not in refused.text
    assert list(emulator.profiles()) == ["u1"]


def test_a_delete_takes_one_kind_of_id_and_at_most_a_hundred(serve: Serve) -> None:
    client, emulator = serve()
    upload(client, profile("u1", Name="A"))
    for body in ({}, {"identity": ["u1"], "guid": ["ct-1"]}, {"identity": []},
                 {"identity": [1, 2]}, {"identity": [f"u{n}" for n in range(101)]}):
        answer = delete(client, body)
        assert answer.status_code == 400 and answer.json()["status"] == "fail", body
    assert client.post("/1/delete/profiles.json", content=b"{not json").status_code == 400
    assert list(emulator.profiles()) == ["u1"]
    reasons = [v["reason"] for v in emulator.state()["stats"]["contract_violations"]]
    assert len(reasons) == 6 and "more than 100 values in one delete" in reasons
    assert delete(client, {"identity": [f"u{n}" for n in range(100)]}).status_code == 200


def test_more_than_three_deletes_in_flight_answer_429_apart_from_uploads(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(latency_ms=500))

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=str(client.base_url), headers=HEADERS,
                                     timeout=10) as ac:
            uploads = [ac.post("/1/upload", json={"d": [profile(f"u{n}", Name="x")]})
                       for n in range(15)]
            deletes = [ac.post("/1/delete/profiles.json", json={"identity": [f"d{n}"]})
                       for n in range(5)]
            answers = await asyncio.gather(*uploads, *deletes)
            return answers[:15], answers[15:]

    uploads, deletes = asyncio.run(burst())
    assert [a.status_code for a in uploads] == [200] * 15  # their own limit of 15
    assert sorted(a.status_code for a in deletes) == [200, 200, 200, 429, 429]
    limited = next(a for a in deletes if a.status_code == 429)
    assert limited.json()["error"] == "Too many concurrent requests"
    stats = emulator.state()["stats"]
    assert (stats["max_in_flight"], stats["max_deletes_in_flight"]) == (15, 5)
    assert stats["rate_limited"] == 2
