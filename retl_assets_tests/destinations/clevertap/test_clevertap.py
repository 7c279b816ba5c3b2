"""CleverTap as a user sets it up: contacts mirrored as profiles (uploaded, and deleted when
they leave the model), events uploaded as events."""

from __future__ import annotations

import json

import httpx
import pytest

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.clevertap import CleverTapEmulator, build_clevertap_app

ACCOUNT, PASSCODE = "TEST-4R6-Z98-876Z", "ct-passcode"

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
    region: eu1                          # required: https://eu1.api.clevertap.com
    base_url: {url}                      # optional; overrides the region's endpoint
{extra}
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts
  events:
    source: warehouse
    primary_key: id
    sql: SELECT id, contact_id, name, occurred_at FROM events
syncs:
  users:
    model: contacts
    destination: engage
    action: mirror                       # upload added/updated profiles, delete deleted ones
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
      ts: occurred_at                    # sent as UNIX epoch seconds
      event_id: id
"""


@pytest.fixture
def clevertap(workspace, monkeypatch):
    monkeypatch.setenv("CLEVERTAP_PASSCODE", PASSCODE)
    emu = CleverTapEmulator({ACCOUNT: {PASSCODE}})
    with EmulatorServer(build_clevertap_app(emu)).start() as server:
        emu.url = server.url  # type: ignore[attr-defined]
        write(workspace, server.url)
        yield emu


def write(workspace, url: str, extra: str = "") -> None:
    workspace.write(PROJECT.format(account=ACCOUNT, url=url, extra=extra))


def profiles(emu) -> dict[str, dict]:
    return {who: {"email": p.get("Email"), "first_name": p.get("Name"), "plan": p.get("plan")}
            for who, p in emu.profiles().items()}


def model_profiles(ws) -> dict[str, dict]:
    return {i: {"email": e, "first_name": f, "plan": p}
            for i, e, f, p in ws.sql("SELECT id, email, first_name, plan FROM contacts")}


def uploaded(emu) -> dict[int, tuple]:
    return {e["evtData"]["event_id"]: (e["evtName"], e["who"], e["ts"]) for e in emu.events()}


def model_events(ws) -> dict[int, tuple]:
    return {i: (n, f"identity:{c}", t) for i, n, c, t in ws.sql(
        "SELECT id, name, contact_id, epoch(occurred_at)::BIGINT FROM events")}


def test_events_reach_clevertap_once(workspace, clevertap):
    # (Profiles mirrored, uploaded and deleted, are the contract suite's CleverTap case.)
    events = workspace.sync("events")
    assert events.status == "success", events.errors
    assert events.syncs["activity"]["succeeded"] == 50
    assert uploaded(clevertap) == model_events(workspace)
    assert workspace.sync("events").syncs["activity"]["sent"] == 0
    assert clevertap.state()["stats"]["contract_violations"] == []


def test_a_large_delete_goes_out_a_hundred_identities_a_request(workspace, clevertap):
    # The delete API takes at most 100 identities a call and 3 calls in flight; latency
    # keeps them open long enough for a fourth to be caught.
    assert workspace.sync().status == "success"
    clevertap.set_faults(latency_ms=50)
    workspace.sql("DELETE FROM contacts WHERE id <= 'u000130'")
    run = workspace.sync()
    s = run.syncs["users"]
    assert run.status == "success", run.errors
    assert (s["sent"], s["succeeded"], s["owed"]) == (130, 130, 0)
    stats = clevertap.state()["stats"]
    assert sorted(stats["delete_sizes"]) == [30, 100]
    assert stats["profiles_deleted"] == 130
    assert stats["max_deletes_in_flight"] <= 3 and stats["status"].get("429", 0) == 0
    assert profiles(clevertap) == model_profiles(workspace)
    assert stats["contract_violations"] == []


def test_deletes_keep_to_three_requests_in_flight(workspace, clevertap):
    # Small batches make many delete requests; the client sends 15 uploads at once but
    # never more than 3 deletes.
    write(workspace, clevertap.url, "    max_concurrency: 15\n    batch_size: 10")
    assert workspace.sync().status == "success"
    clevertap.set_faults(latency_ms=50)
    workspace.sql("DELETE FROM contacts WHERE id <= 'u000100'")
    run = workspace.sync()
    assert run.syncs["users"]["succeeded"] == 100, run.errors
    stats = clevertap.state()["stats"]
    assert stats["delete_sizes"] == [10] * 10
    assert stats["max_deletes_in_flight"] == 3 and stats["status"].get("429", 0) == 0


def test_mirror_deletes_only_profiles_it_uploaded(workspace, clevertap):
    # A row whose profile was refused was never written: its delete is not sent.
    workspace.sql("UPDATE contacts SET email = 'not-an-email' WHERE id = 'u000005'")
    assert workspace.sync().syncs["users"]["rejected"] == 1
    workspace.sql("DELETE FROM contacts WHERE id IN ('u000005', 'u000006')")
    run = workspace.sync()
    s = run.syncs["users"]
    assert (s["sent"], s["succeeded"], s["owed"]) == (1, 1, 0), s
    assert clevertap.state()["stats"]["delete_sizes"] == [1]
    assert profiles(clevertap) == model_profiles(workspace)


def test_a_delete_sync_removes_the_profiles_of_rows_that_leave_the_model(workspace,
                                                                          clevertap):
    # Profiles another tool uploaded; the sync only deletes, by the identity column.
    workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="")
                    .replace("action: mirror", "action: delete"))
    with httpx.Client(base_url=clevertap.url, headers={
            "X-CleverTap-Account-Id": ACCOUNT, "X-CleverTap-Passcode": PASSCODE}) as client:
        client.post("/1/upload", json={"d": [
            {"type": "profile", "identity": f"u{i:06d}", "profileData": {"Name": "x"}}
            for i in (1, 2, 3)]}).raise_for_status()
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs["users"]["sent"] == 0  # the first snapshot deletes nothing
    workspace.sql("DELETE FROM contacts WHERE id IN ('u000001', 'u000002')")
    run = workspace.sync()
    assert (run.syncs["users"]["sent"], run.syncs["users"]["succeeded"]) == (2, 2)
    assert list(clevertap.profiles()) == ["u000003"]


def test_a_missing_identity_is_caught_before_sending(workspace, clevertap):
    workspace.sql("UPDATE events SET contact_id = NULL WHERE id = 7")
    run = workspace.sync("events")
    s = run.syncs["activity"]
    assert (s["succeeded"], s["invalid"], s["owed"]) == (49, 1, 1)
    assert clevertap.state()["stats"]["records_failed"] == 0  # never reached CleverTap


def test_an_event_sync_with_no_mapped_properties_lands(workspace, clevertap):
    # Only evtName and ts mapped: the event still carries `evtData: {}` (CleverTap's README
    # form; its library and the emulator refuse an event without evtData, code 512).
    workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="")
                    .replace("      event_id: id\n", ""))
    assert "event_id" not in workspace.project.config.syncs["activity"].mapping
    run = workspace.sync("events")
    s = run.syncs["activity"]
    assert run.status == "success", run.errors
    assert (s["sent"], s["succeeded"], s["rejected"], s["owed"]) == (50, 50, 0, 0), s
    stored = clevertap.events()
    assert {(e["evtName"], e["who"], e["ts"]) for e in stored} == set(
        model_events(workspace).values())
    assert all(e["evtData"] == {} for e in stored)
    stats = clevertap.state()["stats"]
    assert stats["records_failed"] == 0 and stats["contract_violations"] == []


def test_a_profile_sync_with_no_mapped_properties_lands(workspace, clevertap):
    # The same for profiles: `profileData: {}` (the library requires a profileData object).
    workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="").replace(
        "    mapping:\n      Email: email\n      Name: first_name\n      plan: plan\n",
        "    mapping: {}\n"))
    assert workspace.project.config.syncs["users"].mapping == {}
    run = workspace.sync()
    assert run.status == "success", run.errors
    assert (run.syncs["users"]["succeeded"], run.syncs["users"]["owed"]) == (300, 0)
    assert clevertap.profiles() == {i: {} for (i,) in workspace.sql("SELECT id FROM contacts")}
    assert clevertap.state()["stats"]["records_failed"] == 0


REGIONS = ("eu1", "in1", "sg1", "us1", "aps3", "mec1")


def test_the_region_is_required_and_the_error_lists_the_regions(workspace, clevertap):
    from retl_assets.destinations import open_destination
    from retl_assets.errors import ProjectError
    from retl_assets.project import load_project

    # No default: each account answers only on its own region's host (another one: 401).
    workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="")
                    .replace("    region: eu1", "").replace("    base_url:", "    # base_url:"))
    with pytest.raises(ProjectError) as missing:
        load_project(workspace.root / "retl.yaml")
    message = str(missing.value)
    assert "destinations.engage" in message and "region is required" in message
    assert all(region in message for region in REGIONS), message
    workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="")
                    .replace("region: eu1", "region: eu").replace("    base_url:", "    # x:"))
    with pytest.raises(ProjectError) as typo:
        load_project(workspace.root / "retl.yaml")
    assert "destinations.engage.region" in str(typo.value)
    assert all(region in str(typo.value) for region in REGIONS)
    for region in REGIONS:
        workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="")
                        .replace("region: eu1", f"region: {region}")
                        .replace("    base_url:", "    # base_url:"))
        dest = open_destination(workspace.project, "engage")
        assert dest.base_url == f"https://{region}.api.clevertap.com"
    # base_url alone names the endpoint (an emulator, a proxy): no region needed.
    workspace.write(PROJECT.format(account=ACCOUNT, url=clevertap.url, extra="")
                    .replace("    region: eu1", ""))
    assert workspace.sync("events").syncs["activity"]["succeeded"] == 50


# -- how the writer reads CleverTap's answers (no sync needed) --------------------------------


def test_unprocessed_records_are_matched_by_their_echo_not_their_position(workspace, clevertap):
    import json

    import httpx

    from retl_assets.destinations import open_destination
    from retl_assets.destinations.base import Record
    from retl_assets.errors import AuthError, RateLimited, RefusedRequest

    project = workspace.project
    w = open_destination(project, "engage").writer("users", project.config.syncs["users"])
    payloads = [{"type": "profile", "identity": f"u{i}", "profileData": {"Email": f"e{i}"}}
                for i in range(4)]
    sent = [Record(f"m{i}", f"u{i}", json.dumps(p), "profile") for i, p in enumerate(payloads)]
    body = {"status": "partial", "processed": 2, "unprocessed": [
        {"status": "fail", "code": 515, "error": "Email invalid", "record": payloads[3]},
        {"status": "fail", "code": 515, "error": "Email invalid",  # echoed with keys reordered
         "record": {"profileData": {"Email": "e1"}, "identity": "u1", "type": "profile"}}]}
    answer = w.read(httpx.Response(200, json=body), "profile", sent)
    assert answer.rejected == {3: "515: Email invalid", 1: "515: Email invalid"}
    stranger = {"status": "partial", "processed": 3, "unprocessed": [
        {"status": "fail", "code": 555, "error": "?", "record": {"identity": "zz"}}]}
    for status, body, error in ((200, stranger, RefusedRequest), (429, {}, RateLimited),
                                (401, {}, AuthError)):
        with pytest.raises(error):
            w.read(httpx.Response(status, json=body), "profile", sent)
    ok = w.read(httpx.Response(200, json={"status": "success", "processed": 4}), "profile",
                sent)
    assert ok.ids == {i: f"u{i}" for i in range(4)}  # what a mirror's delete names


def test_a_delete_answer_is_read_as_a_whole_or_per_identity(workspace, clevertap):
    from retl_assets.destinations import open_destination
    from retl_assets.destinations.base import Record
    from retl_assets.errors import AuthError, RateLimited, RefusedRequest

    project = workspace.project
    w = open_destination(project, "engage").writer("users", project.config.syncs["users"])
    sent = [Record(f"m{i}", f"u{i}", f'{{"identity": "u{i}"}}', "delete", f"u{i}")
            for i in range(3)]
    request = w.request(httpx.AsyncClient(), "delete", sent)
    assert (request.method, request.url.path) == ("POST", "/1/delete/profiles.json")
    assert json.loads(request.content) == {"identity": ["u0", "u1", "u2"]}
    assert request.headers["X-CleverTap-Passcode"] == PASSCODE
    assert w.read(httpx.Response(200, json={"status": "success"}), "delete", sent).rejected == {}
    some = {"status": "partial", "unprocessed": [
        {"status": "fail", "code": 555, "error": "busy", "identity": "u1"}]}
    assert w.read(httpx.Response(200, json=some), "delete", sent).rejected == {1: "555: busy"}
    whole = {"status": "fail", "error": "Bad Request"}
    for status, body, error in ((200, whole, RefusedRequest), (400, whole, RefusedRequest),
                                (429, {}, RateLimited), (401, {}, AuthError),
                                (403, {}, AuthError)):
        with pytest.raises(error):
            w.read(httpx.Response(status, json=body), "delete", sent)
