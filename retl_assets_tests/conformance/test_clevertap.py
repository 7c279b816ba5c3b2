"""The CleverTap emulator against CleverTap's official Node library, `clevertap`.

The library (CleverTap/clevertap-node) has no base-URL option; node/clevertap.cjs records
the regional endpoint it builds, then points the instance at the emulator. It checks each
upload record before sending (an identity, a known type, a profileData or evtData object),
sends the account id and passcode headers, cuts uploads into requests of at most 100 records
and resolves with the answer's JSON body as is. Every call retl's CleverTap writer makes is
driven: /1/upload with profiles and events, /1/delete/profiles.json and /1/profile.json (the
connection check); then retl's own requests are replayed through the library.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from retl_assets.destinations.clevertap.config import REGIONS
from retl_assets.destinations.clevertap.writer import CleverTapDestination
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.clevertap import CleverTapEmulator, build_clevertap_app
from retl_assets_tests.conformance.node_runner import Recorder, require, run

ACCOUNT, PASSCODE = "TEST-ABC-DEF-123Z", "conformance-passcode"
TS = 1_767_225_600  # 2026-01-01, epoch seconds


@pytest.fixture
def node() -> str:
    return require("clevertap")


Serve = Callable[..., tuple[CleverTapEmulator, str, Recorder]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start an emulator on loopback: (emulator, base URL, recorder of its requests)."""
    servers: list[EmulatorServer] = []

    def _serve(**args: Any) -> tuple[CleverTapEmulator, str, Recorder]:
        emulator = CleverTapEmulator({ACCOUNT: {PASSCODE}}, **args)
        recorder = Recorder(build_clevertap_app(emulator))
        server = EmulatorServer(recorder).start()
        servers.append(server)
        return emulator, server.url, recorder

    yield _serve
    for server in servers:
        server.stop()


def drive(node: str, url: str, *calls: dict[str, Any], passcode: str = PASSCODE,
          region: str = "us1") -> dict[str, Any]:
    out = run(node, "clevertap.cjs", ["--base-url", url, "--account-id", ACCOUNT,
                                      "--passcode", passcode, "--region", region], list(calls))
    assert len(out["results"]) == len(calls), out
    return out


def call(method: str, *args: Any) -> dict[str, Any]:
    return {"method": method, "args": list(args)}


def ok(result: dict) -> Any:
    assert result["ok"], result
    return result["value"]


def profile(identity: str, **data: Any) -> dict[str, Any]:
    return {"type": "profile", "identity": identity, "ts": TS, "profileData": data}


def event(identity: str, name: str, **data: Any) -> dict[str, Any]:
    return {"type": "event", "identity": identity, "evtName": name, "ts": TS, "evtData": data}


def uploads(recorder: Recorder) -> list[dict]:
    return [r for r in recorder.api() if r["path"] == "/1/upload"]


# -- regions, headers, auth ---------------------------------------------------------------------

def test_every_library_region_is_the_host_retl_builds(node: str, serve: Serve) -> None:
    _, url, _ = serve()
    regions = drive(node, url)["library"]["regions"]
    assert set(regions.values()) == {"eu1", "in1", "sg1", "us1", "aps3", "mec1"}
    assert set(REGIONS) == set(regions.values())  # what retl's config accepts, and lists
    for region in regions.values():
        endpoint = drive(node, url, region=region)["library"]["regionEndpoint"]
        retl = CleverTapDestination("ct", ACCOUNT, PASSCODE, region=region).base_url
        assert endpoint == f"{retl}/1" == f"https://{region}.api.clevertap.com/1"


def test_the_library_authenticates_with_the_headers_retl_sends(node: str, serve: Serve) -> None:
    emulator, url, recorder = serve()
    out = drive(node, url, call("upload", [profile("u1", Name="Ann")]))
    assert ok(out["results"][0]) == {"status": "success", "processed": 1, "unprocessed": []}
    [sent] = uploads(recorder)
    assert sent["headers"]["x-clevertap-account-id"] == ACCOUNT
    assert sent["headers"]["x-clevertap-passcode"] == PASSCODE
    retl = CleverTapDestination("ct", ACCOUNT, PASSCODE, base_url=url)._headers
    assert {"x-clevertap-account-id", "x-clevertap-passcode"} <= {h.lower() for h in retl}
    refused = drive(node, url, call("upload", [profile("u2", Name="Bo")]),
                    passcode="wrong")["results"][0]
    body = ok(refused)  # the library resolves with the error body as it came
    assert (body["status"], body["code"]) == ("fail", 401) and "wrong" not in json.dumps(body)
    assert emulator.profiles() == {"u1": {"Name": "Ann"}}


# -- /1/upload: profiles ------------------------------------------------------------------------

def test_profiles_by_each_identifier_and_per_record_failures(node: str, serve: Serve) -> None:
    emulator, url, _ = serve()
    bad = profile("u4", Email="not-an-email")
    records = [
        profile("u1", Name="Ann", Email="ann@x.io", Phone="+14155550100", Age=30, plan="pro"),
        {"type": "profile", "objectId": "-2ce3cca260664f70b82b1c6bb505f462",
         "profileData": {"favoriteFood": "soup"}},
        {"type": "profile", "FBID": "34322423", "ts": TS, "profileData": {"plan": "free"}},
        bad,
    ]
    first, second = drive(node, url, call("upload", records),
                          call("upload", [profile("u1", plan="enterprise")]))["results"]
    body = ok(first)
    assert (body["status"], body["processed"]) == ("partial", 3)
    [refused] = body["unprocessed"]
    assert (refused["status"], refused["code"], refused["record"]) == ("fail", 515, bad)
    assert ok(second)["status"] == "success"
    assert emulator.profiles() == {
        "u1": {"Name": "Ann", "Email": "ann@x.io", "Phone": "+14155550100", "Age": 30,
               "plan": "enterprise"},
        "objectId:-2ce3cca260664f70b82b1c6bb505f462": {"favoriteFood": "soup"},
        "FBID:34322423": {"plan": "free"}}


def test_the_library_checks_records_before_sending(node: str, serve: Serve) -> None:
    emulator, url, recorder = serve()
    results = drive(node, url,
                    call("upload", [{"type": "profile", "profileData": {"a": 1}}]),
                    call("upload", [{"type": "profile", "identity": "u1"}]),
                    call("upload", [{"type": "event", "identity": "u1", "evtName": "E"}]),
                    )["results"]
    errors = [r["error"] for r in results]
    assert all(not r["ok"] for r in results), results
    assert "identity" in errors[0] and "profileData" in errors[1] and "evtData" in errors[2]
    assert uploads(recorder) == [] and emulator.profiles() == {}


def test_the_library_cuts_uploads_into_requests_of_one_hundred(node: str, serve: Serve) -> None:
    # CleverTap documents 1,000 records a call (retl sends up to 1,000); the library's own
    # ceiling is 100, whatever batchSize it is given.
    emulator, url, recorder = serve()
    records = [profile(f"u{i}", n=i) for i in range(150)]
    [answer] = drive(node, url, call("upload", records, {"batchSize": 1000}))["results"]
    assert [r["processed"] for r in ok(answer)] == [100, 50]
    assert [len(json.loads(r["body"])["d"]) for r in uploads(recorder)] == [100, 50]
    assert len(emulator.profiles()) == 150


# -- /1/upload: events --------------------------------------------------------------------------

def test_events_are_stored_and_bad_ones_come_back_with_their_code(node: str,
                                                                  serve: Serve) -> None:
    emulator, url, _ = serve()
    records = [
        event("u1", "Charged", Amount=300, Currency="USD",
              Items=[{"Category": "books", "Quantity": 1}]),
        {"type": "event", "FBID": "34322423", "evtName": "Product viewed",
         "evtData": {"Price": 59.99}},  # no ts: CleverTap takes the time of arrival
        event("u1", "App Launched"),  # a system event a client may not raise
        {**event("u1", "Late"), "ts": TS * 1000},  # milliseconds are not epoch seconds
    ]
    [answer] = drive(node, url, call("upload", records))["results"]
    body = ok(answer)
    assert (body["status"], body["processed"]) == ("partial", 2)
    assert [(u["code"], u["record"]) for u in body["unprocessed"]] == [
        (513, records[2]), (525, records[3])]
    stored = emulator.events()
    assert [(e["who"], e["evtName"]) for e in stored] == [
        ("identity:u1", "Charged"), ("FBID:34322423", "Product viewed")]
    assert stored[0]["evtData"]["Items"] == [{"Category": "books", "Quantity": 1}]
    assert stored[0]["ts"] == TS


# -- /1/delete/profiles.json and /1/profile.json ------------------------------------------------

def test_deletes_by_identity_or_guid_as_the_library_sends_them(node: str, serve: Serve) -> None:
    emulator, url, recorder = serve()
    guid = "-2ce3cca260664f70b82b1c6bb505f462"
    results = drive(
        node, url,
        call("upload", [profile("u1", a=1), profile("u2", a=2), profile("u3", a=3),
                        {"type": "profile", "objectId": guid, "profileData": {"a": 4}}]),
        call("delete", {"identity": ["u1", "u2", "nobody"]}),
        call("delete", {"guid": guid}),
        call("delete", {"identity": "u3", "guid": guid}),  # both: refused
        call("delete", {"identity": [f"x{i}" for i in range(101)]}),  # over 100
        call("profile", {"identity": "u3"}),
        call("profile", {"identity": "u1"}),
    )["results"]
    assert [ok(r)["status"] for r in results[1:]] == ["success", "success", "fail", "fail",
                                                      "success", "fail"]
    assert [ok(r).get("code") for r in results[3:5]] == [400, 400]
    assert ok(results[5])["record"]["profileData"] == {"a": 3}
    assert emulator.profiles() == {"u3": {"a": 3}}
    deletes = [r for r in recorder.api() if r["path"] == "/1/delete/profiles.json"]
    assert [r["method"] for r in deletes] == ["POST"] * 4
    assert json.loads(deletes[0]["body"]) == {"identity": ["u1", "u2", "nobody"]}
    assert emulator.state()["stats"]["delete_sizes"] == [3, 1]


def test_refusals_reach_the_library_as_json_bodies(node: str, serve: Serve) -> None:
    emulator, url, _ = serve()
    emulator.set_faults(rate_429=1.0)
    limited = ok(drive(node, url, call("upload", [profile("u1", a=1)]))["results"][0])
    assert limited == {"status": "fail", "error": "Too many concurrent requests", "code": 429}
    emulator.set_faults(rate_429=0.0, error_rate=1.0)
    broken = ok(drive(node, url, call("upload", [profile("u1", a=1)]))["results"][0])
    assert broken["status"] == "fail" and broken["code"] in (500, 503)
    emulator.set_faults(error_rate=0.0, dead=True)
    dead = ok(drive(node, url, call("delete", {"identity": "u1"}))["results"][0])
    assert (dead["status"], dead["code"]) == ("fail", 503)
    assert emulator.profiles() == {}


# -- retl's own requests, replayed through the library --------------------------------------------

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  engage:
    type: clevertap
    account_id: {account}
    passcode: {{env: CLEVERTAP_PASSCODE}}
    base_url: {url}
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: SELECT id AS "userId", email, first_name, plan FROM contacts
  events:
    source: warehouse
    primary_key: id
    sql: SELECT id, contact_id, name, occurred_at FROM events
syncs:
  users:
    model: contacts
    destination: engage
    action: mirror
    match: {{identity: userId}}
    mapping:
      Email: email
      Name: first_name
      plan: plan
  activity:
    model: events
    destination: engage
    action: event
    records: added
    match: {{identity: contact_id}}
    mapping:
      evtName: name
      ts: occurred_at
{event_data}
"""


def sync_through(workspace, serve: Serve, monkeypatch, event_data: str
                 ) -> tuple[CleverTapEmulator, Recorder]:
    monkeypatch.setenv("CLEVERTAP_PASSCODE", PASSCODE)
    emulator, url, recorder = serve()
    workspace.write(PROJECT.format(account=ACCOUNT, url=url, event_data=event_data))
    for model in ("contacts", "events"):
        assert workspace.sync(model).status == "success"
    return emulator, recorder


def replay(node: str, serve: Serve, recorder: Recorder) -> tuple[CleverTapEmulator, list]:
    """Send what retl sent again, through the library, to a fresh emulator."""
    fresh, url, _ = serve()
    calls = []
    for sent in recorder.api():
        assert sent["headers"]["x-clevertap-account-id"] == ACCOUNT
        assert sent["headers"]["x-clevertap-passcode"] == PASSCODE
        if sent["path"] == "/1/upload":
            calls.append(call("upload", json.loads(sent["body"])["d"]))
        elif sent["path"] == "/1/delete/profiles.json":
            calls.append(call("delete", json.loads(sent["body"])))
    assert {c["method"] for c in calls} == {"upload", "delete"}, calls
    return fresh, drive(node, url, *calls)["results"]


def test_retl_uploads_and_deletes_replay_through_the_library(node: str, serve: Serve,
                                                             workspace, monkeypatch) -> None:
    emulator, recorder = sync_through(workspace, serve, monkeypatch,
                                      "      event_id: id               # into evtData")
    gone = workspace.sql("SELECT id FROM contacts ORDER BY id LIMIT 2")
    workspace.sql(f"DELETE FROM contacts WHERE id IN ('{gone[0][0]}', '{gone[1][0]}')")
    assert workspace.sync("contacts").status == "success"
    assert len(emulator.profiles()) == 298 and len(emulator.events()) == 50
    fresh, results = replay(node, serve, recorder)
    for result in results:
        answers = ok(result)
        for answer in answers if isinstance(answers, list) else [answers]:
            assert answer["status"] == "success", answer
    assert fresh.profiles() == emulator.profiles()
    assert fresh.events() == emulator.events()


def test_retl_events_without_properties_still_carry_evt_data(node: str, serve: Serve,
                                                              workspace, monkeypatch) -> None:
    # An event sync mapping only evtName and ts: retl sends `evtData: {}`, as CleverTap's
    # README does; the library refuses an event without evtData and the emulator answers
    # it 512, so without it no event would land.
    monkeypatch.setenv("CLEVERTAP_PASSCODE", PASSCODE)
    emulator, url, recorder = serve()
    workspace.write(PROJECT.format(account=ACCOUNT, url=url, event_data=""))
    run_ = workspace.sync("events")
    assert run_.status == "success", run_.errors
    assert run_.syncs["activity"]["succeeded"] == 50 and run_.syncs["activity"]["owed"] == 0
    sent = [json.loads(r["body"])["d"] for r in uploads(recorder)]
    assert sent and all(e["evtData"] == {} for d in sent for e in d)
    assert len(emulator.events()) == 50
    assert all(e["evtData"] == {} for e in emulator.events())
    # The library takes retl's events as they are (its own check passes) and they land.
    fresh, fresh_url, _ = serve()
    for result in drive(node, fresh_url, *[call("upload", d) for d in sent])["results"]:
        answers = ok(result)
        for answer in answers if isinstance(answers, list) else [answers]:
            assert answer["status"] == "success", answer
    assert fresh.events() == emulator.events()
