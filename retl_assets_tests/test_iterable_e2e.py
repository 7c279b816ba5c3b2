"""Iterable as a user sets it up: contacts mirrored as users by email, and the events table
tracked as custom events of those users."""

from __future__ import annotations

from datetime import UTC

import pytest

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.iterable import IterableEmulator, build_iterable_app

KEY = "iterable-test-key"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  iterable:
    type: iterable
    api_key: {{env: ITERABLE_API_KEY}}
    base_url: {url}   # optional; or region: eu for https://api.eu.iterable.com
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts
  events:
    source: warehouse
    primary_key: event_id
    sql: |
      SELECT e.id AS event_id, c.email, e.name, e.occurred_at
      FROM events e JOIN contacts c ON c.id = e.contact_id
syncs:
  contacts_to_iterable:
    model: contacts
    destination: iterable
    action: mirror                   # bulkUpdate added and updated, delete deleted
    match: {{email: email}}            # Iterable identifier (email or userId): model column
    mapping:
      firstName: first_name          # into dataFields
      plan: plan
  events_to_iterable:
    model: events
    destination: iterable
    action: track
    match: {{email: email}}
    mapping:
      eventName: name
      createdAt: occurred_at         # sent as unix seconds
      warehouseId: event_id          # into dataFields
"""


@pytest.fixture
def iterable(workspace, monkeypatch):
    monkeypatch.setenv("ITERABLE_API_KEY", KEY)
    emu = IterableEmulator({KEY})  # Iterable's published per-endpoint limits
    with EmulatorServer(build_iterable_app(emu)).start() as server:
        workspace.write(PROJECT.format(url=server.url))
        yield emu


def iterable_users(emu) -> dict[str, dict]:
    return {email: {"firstName": f.get("firstName"), "plan": f.get("plan")}
            for email, f in emu.records().items()}


def model_users(ws) -> dict[str, dict]:
    return {email: {"firstName": first, "plan": plan}
            for email, first, plan in ws.sql("SELECT email, first_name, plan FROM contacts")}


def test_mirror_creates_updates_and_deletes_exactly_the_changes(workspace, iterable):
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs["contacts_to_iterable"]["succeeded"] == 300
    assert iterable_users(iterable) == model_users(workspace)

    workspace.sql("""
        INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1, now());
        UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
        DELETE FROM contacts WHERE id IN ('u000020', 'u000021');
    """)
    before = dict(iterable.state()["stats"])
    second = workspace.sync()
    s = second.syncs["contacts_to_iterable"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (4, 4, 0, 0)
    assert iterable_users(iterable) == model_users(workspace)
    after = iterable.state()["stats"]
    assert (after["created"] - before["created"], after["updated"] - before["updated"],
            after["deleted"] - before["deleted"]) == (1, 1, 2)
    # One bulkUpdate for the add and the update, then one DELETE a user.
    assert after["requests"] - before["requests"] == 3
    assert after["status"].get("400", 0) == 0
    assert after["contract_violations"] == []


def test_events_are_tracked_with_unix_times_and_retl_ids(workspace, iterable):
    assert workspace.sync().status == "success"
    run = workspace.sync("events")
    assert run.status == "success", run.errors
    assert run.syncs["events_to_iterable"]["succeeded"] == 50
    tracked = {e["dataFields"]["warehouseId"]: (e["email"], e["eventName"], e["createdAt"])
               for e in iterable.events()}
    rows = workspace.sql("SELECT e.id, c.email, e.name, e.occurred_at FROM events e "
                         "JOIN contacts c ON c.id = e.contact_id")
    assert tracked == {i: (m, n, int(t.replace(tzinfo=UTC).timestamp()))
                       for i, m, n, t in rows}
    assert all(len(e["id"]) == 32 for e in iterable.events())  # retl's idempotency keys
    assert iterable.state()["stats"]["contract_violations"] == []


def test_invalid_emails_are_rejected_one_by_one_and_land_once_fixed(workspace, iterable):
    workspace.sql("UPDATE contacts SET email = 'not-an-email' || id "
                  "WHERE id IN ('u000005', 'u000050')")
    run = workspace.sync()
    s = run.syncs["contacts_to_iterable"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (298, 2, 2)
    assert len(iterable.records()) == 298
    owed = workspace.owed("contacts_to_iterable")
    assert set(owed) == {"u000005", "u000050"}
    assert all("rejected" in e and "invalidEmails" in e for e in owed.values()), owed
    workspace.sql("UPDATE contacts SET email = 'fixed' || id || '@example.com' "
                  "WHERE id IN ('u000005', 'u000050')")
    fixed = workspace.sync()
    assert fixed.syncs["contacts_to_iterable"]["owed"] == 0
    assert iterable_users(iterable) == model_users(workspace)


def test_a_wrong_key_stops_at_once_and_commits_nothing(workspace, iterable, monkeypatch):
    monkeypatch.setenv("ITERABLE_API_KEY", "wrong")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'iterable' refused the credentials" in e for e in run.errors), run.errors
    assert iterable.records() == {}
    assert workspace.store.sync_state("contacts_to_iterable").cursor is None


def test_twenty_thousand_rows_stay_under_the_rate_limit(workspace, iterable):
    workspace.add_bulk_contacts()
    run = workspace.sync()
    s = run.syncs["contacts_to_iterable"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20000, 0)
    stats = iterable.state()["stats"]
    assert stats["max_requests_in_window_by_endpoint"]["bulkUpdate"] <= 5  # 5 requests/s
    assert stats["status"].get("429", 0) == 0
    assert len(iterable.records()) == 20000
