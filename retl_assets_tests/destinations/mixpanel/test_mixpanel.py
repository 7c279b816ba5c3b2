"""Mixpanel as a user sets it up: contacts mirrored to user profiles, events imported."""

from __future__ import annotations

import json

import duckdb
import httpx
import pytest

from retl_assets.destinations import open_destination
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.mixpanel import MixpanelEmulator, build_mixpanel_app

TOKEN = "mp-project-token"
SA_USER, SA_SECRET = "retl.sa", "mp-sa-secret"
PROJECT_ID = "31337"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  product:
    type: mixpanel
    project_token: {{env: MIXPANEL_TOKEN}}          # $token of profile updates
    project_id: "{project_id}"
    service_account_user: {sa_user}                # /import authenticates with it
    service_account_secret: {{env: MIXPANEL_SA_SECRET}}
    base_url: {url}                                # optional; default https://api.mixpanel.com
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
  people:
    model: contacts
    destination: product
    action: mirror                       # $set added and updated profiles, $delete deleted
    match: {{distinct_id: userId}}
    mapping:
      $email: email
      $first_name: first_name
      plan: plan
  activity:
    model: events
    destination: product
    action: track                        # /import, deduplicated by $insert_id
    records: added
    match: {{distinct_id: contact_id}}
    mapping:
      event: name
      time: occurred_at
      event_id: id
"""


@pytest.fixture
def mixpanel(workspace, monkeypatch):
    monkeypatch.setenv("MIXPANEL_TOKEN", TOKEN)
    monkeypatch.setenv("MIXPANEL_SA_SECRET", SA_SECRET)
    emu = MixpanelEmulator({TOKEN}, service_accounts={SA_USER: SA_SECRET}, project_id=PROJECT_ID)
    with EmulatorServer(build_mixpanel_app(emu)).start() as server:
        emu.url = server.url  # type: ignore[attr-defined]
        write(workspace, server.url)
        yield emu


def write(workspace, url: str, extra: str = "") -> None:
    workspace.write(PROJECT.format(url=url, project_id=PROJECT_ID, sa_user=SA_USER, extra=extra))


def imported(emu) -> dict[int, tuple]:
    return {e["properties"]["event_id"]: (e["event"], e["properties"]["distinct_id"],
                                          e["properties"]["time"]) for e in emu.events()}


def model_events(ws) -> dict[int, tuple]:
    return {i: (n, c, t) for i, n, c, t in ws.sql(
        "SELECT id, name, contact_id, epoch_ms(occurred_at) FROM events")}


def ledger_errors(workspace, sync: str, key: str) -> dict:
    store = workspace.store
    path = store.ledger_path(sync, store.sync_state(sync))
    return dict(duckdb.sql(f"SELECT {key}, __retl_error FROM read_parquet('{path}')").fetchall())


def test_events_are_imported_once_through_the_service_account(workspace, mixpanel):
    # (Profiles, through /engage, are the contract suite's Mixpanel case.)
    events = workspace.sync("events")
    assert events.status == "success", events.errors
    assert events.syncs["activity"]["succeeded"] == 50
    assert imported(mixpanel) == model_events(workspace)
    # Nothing new in the warehouse: nothing is sent, and nothing was ever imported twice.
    again = workspace.sync("events")
    assert again.syncs["activity"]["sent"] == 0
    stats = mixpanel.state()["stats"]
    assert (stats["duplicates"], stats["updates_ignored"]) == (0, 0)
    assert stats["contract_violations"] == []


def test_events_mixpanel_refuses_are_rejected_one_by_one_and_land_once_fixed(workspace,
                                                                             mixpanel):
    workspace.sql("UPDATE events SET occurred_at = TIMESTAMP '1960-01-01' WHERE id IN (5, 17)")
    run = workspace.sync("events")
    s = run.syncs["activity"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["rejected"], s["owed"]) == (48, 2, 2)
    assert len(mixpanel.events()) == 48
    owed = ledger_errors(workspace, "activity", "id")
    assert set(owed) == {5, 17}
    assert all(e.startswith("rejected") and "properties.time" in e for e in owed.values()), owed

    workspace.sql("UPDATE events SET occurred_at = TIMESTAMP '2026-03-01 12:00:00' "
                  "WHERE id IN (5, 17)")
    fixed = workspace.sync("events")
    assert fixed.syncs["activity"]["owed"] == 0
    assert imported(mixpanel) == model_events(workspace)
    assert mixpanel.state()["stats"]["contract_violations"] == []


def test_a_wrong_service_account_secret_stops_an_import_and_commits_nothing(workspace, mixpanel,
                                                                            monkeypatch):
    # (A wrong project token, on /engage, is the contract suite's story.)
    monkeypatch.setenv("MIXPANEL_SA_SECRET", "wrong-secret")
    run = workspace.sync("events")
    assert run.status == "failure"
    assert any("'product' refused the credentials" in e for e in run.errors), run.errors
    assert "wrong-secret" not in " ".join(run.errors)
    assert mixpanel.profiles() == {} and mixpanel.events() == []
    assert workspace.store.sync_state("activity").cursor is None


def test_the_connection_check_reads_who_the_service_account_is(workspace, mixpanel,
                                                               monkeypatch):
    dest = open_destination(workspace.project, "product")
    with httpx.Client() as client:
        good = client.send(dest.check_request(client))
        monkeypatch.setenv("MIXPANEL_SA_SECRET", "nope")
        bad_dest = open_destination(workspace.project, "product")
        bad = client.send(bad_dest.check_request(client))
    assert good.status_code == 200 and good.request.method == "GET"
    assert good.request.url.path == "/api/app/me"
    assert bad.status_code == 401
    assert mixpanel.profiles() == {} and mixpanel.events() == []


# -- how the writer reads Mixpanel's answers (no sync needed) ---------------------------------


def writer(workspace, sync: str):
    project = workspace.project
    return open_destination(project, "product").writer(sync, project.config.syncs[sync])


def records(w, payloads: list[dict]) -> list:
    from retl_assets.destinations.base import Record

    return [Record(f"m{i}", f"k{i}", json.dumps(p), "import") for i, p in enumerate(payloads)]


def test_failed_records_are_found_by_either_spelling_of_the_insert_id(workspace, mixpanel):
    w = writer(workspace, "activity")
    sent = records(w, [{"event": "E", "properties": {"$insert_id": f"id{i}"}} for i in range(3)])
    # The index is wrong on purpose: the insert id decides.
    body = {"code": 400, "status": "Bad Request", "num_records_imported": 1, "failed_records": [
        {"index": 0, "insert_id": "id2", "field": "properties.time", "message": "bad time"},
        {"index": 1, "$insert_id": "id1", "field": "event", "message": "bad name"}]}
    answer = w.read(httpx.Response(400, json=body), "import", sent)
    assert answer.rejected == {2: "properties.time: bad time", 1: "event: bad name"}


def test_engage_zero_refuses_the_batch_and_429_backs_off_exponentially(workspace, mixpanel):
    w = writer(workspace, "people")
    sent = records(w, [{"$distinct_id": "a", "$set": {}}])
    from retl_assets.errors import AuthError, RateLimited, RefusedRequest

    def wait(response: httpx.Response) -> float:
        with pytest.raises(RateLimited) as limited:
            w.read(response, "import", sent)
        return limited.value.retry_after

    with pytest.raises(RefusedRequest, match="^/engage: bad \\$set$"):
        w.read(httpx.Response(200, json={"status": 0, "error": "bad $set"}), "set", sent)
    with pytest.raises(AuthError):
        w.read(httpx.Response(200, json={"status": 0, "error": "Invalid token"}), "set", sent)
    waits = [wait(httpx.Response(429, json={})) for _ in range(6)]
    assert 3 <= waits[0] <= 7 and 9 <= waits[2] <= 13 and 61 <= waits[5] <= 65
    assert w.read(httpx.Response(200, json={"code": 200}), "import", sent).rejected == {}
    assert 3 <= wait(httpx.Response(429)) <= 7  # reset
