"""Conversion as a user sets it up: contacts mirrored by userId and email, their events,
and a custom object related to each contact."""

from __future__ import annotations

import pytest

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.conversion import ConversionEmulator, build_conversion_app

KEY = "sk_live_e2e_secret"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  cnv:
    type: conversion
    api_key: {{env: CONVERSION_API_KEY}}
    base_url: {url}   # optional; default is https://pub-api.conversion.ai/api
    # rate_limit: "10/1"               # the default: v1's published 10 a second
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
  subscriptions:
    source: warehouse
    primary_key: id
    sql: |
      SELECT 'sub-' || id AS id, id AS user_id, plan, 'owner' AS role
      FROM contacts WHERE plan <> 'free'
syncs:
  contacts_to_cnv:
    model: contacts
    destination: cnv
    action: mirror                     # upsert added and updated, delete deleted (by email)
    match: {{userId: userId, email: email}}   # userId is matched first; email creates
    mapping:
      first_name: first_name           # -> fields.first_name
      plan: plan
  events_to_cnv:
    model: events
    destination: cnv
    action: event
    records: added
    match: {{userId: contact_id}}
    mapping:
      event: name                      # the event's name: Conversion's required `event`
      timestamp: occurred_at           # ISO 8601
      eventId: id                      # a repeated eventId updates the event in place
  subscriptions_to_cnv:
    model: subscriptions
    destination: cnv
    action: object
    object: subscription               # the custom object type
    match: {{id: id, userId: user_id}}   # the object's id; the contact it relates to
    mapping:
      plan: plan
      relationshipFields.role: role
"""


@pytest.fixture
def conversion(workspace, monkeypatch):
    monkeypatch.setenv("CONVERSION_API_KEY", KEY)
    emu = ConversionEmulator({KEY}, rate_limit=(10, 1.0))
    with EmulatorServer(build_conversion_app(emu)).start() as server:
        workspace.write(PROJECT.format(url=server.url))
        yield emu


def cnv_contacts(emu) -> dict[str, dict]:
    return {c["userId"]: {"email": email, **c["fields"]} for email, c in emu.contacts().items()}


def model_contacts(ws) -> dict[str, dict]:
    return {uid: {"email": email, "first_name": first, "plan": plan}
            for uid, email, first, plan in ws.sql(
                "SELECT id, email, first_name, plan FROM contacts")}


def test_a_changed_email_lands_on_the_same_contact_found_by_user_id(workspace, conversion):
    # userId is matched first: a row whose email changes updates its contact, and the new
    # address replaces the old one (the contract suite covers the rest of a mirror).
    first = workspace.sync()
    assert first.status == "success", first.errors
    ids_before = {c["userId"]: c["cnvContactId"] for c in conversion.contacts().values()}
    workspace.sql("UPDATE contacts SET plan = 'enterprise', email = 'moved10@example.com' "
                  "WHERE id = 'u000010'")
    before = conversion.state()["stats"]
    second = workspace.sync()
    s = second.syncs["contacts_to_cnv"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (1, 1, 0, 0)
    assert cnv_contacts(conversion) == model_contacts(workspace)
    after = conversion.state()["stats"]
    assert (after["created"] - before["created"], after["updated"] - before["updated"],
            after["deleted"] - before["deleted"]) == (0, 1, 0)
    ids_after = {c["userId"]: c["cnvContactId"] for c in conversion.contacts().values()}
    assert ids_after == ids_before


def test_events_and_custom_objects_attach_to_the_synced_contacts(workspace, conversion):
    assert workspace.sync().status == "success"
    events = workspace.sync("events")
    assert events.status == "success", events.errors
    assert events.syncs["events_to_cnv"]["succeeded"] == 50
    by_cnv = {c["cnvContactId"]: c["userId"] for c in conversion.contacts().values()}
    got = {e["eventId"]: (by_cnv[e["cnvContactId"]], e["event"])
           for e in conversion.events().values()}
    assert got == {str(i): (c, n) for i, c, n in workspace.sql(
        "SELECT id, contact_id, name FROM events")}

    subs = workspace.sync("subscriptions")
    assert subs.status == "success", subs.errors
    objects = conversion.objects("subscription")
    expected = {f"sub-{uid}": plan for uid, plan in workspace.sql(
        "SELECT id, plan FROM contacts WHERE plan <> 'free'")}
    assert {i: o["fields"]["plan"] for i, o in objects.items()} == expected
    ids = {c["userId"]: c["cnvContactId"] for c in conversion.contacts().values()}
    assert all(o["relationships"] == {ids[i.removeprefix("sub-")]: {"role": "owner"}}
               for i, o in objects.items())


def test_failed_events_are_rejected_from_their_results_without_failing_the_rest(
        workspace, conversion):
    # Events never create contacts: those of a contact Conversion does not hold fail in
    # their own result (success: false) while the request and the other events succeed.
    assert workspace.sync().status == "success"
    orphans = {str(i) for (i,) in workspace.sql(
        "SELECT id FROM events ORDER BY id LIMIT 3")}
    workspace.sql(f"UPDATE events SET contact_id = 'nobody' "
                  f"WHERE id IN ({', '.join(repr(i) for i in orphans)})")
    before = conversion.state()["stats"]["status"].get("200", 0)
    run = workspace.sync("events")
    s = run.syncs["events_to_cnv"]
    assert run.status == "success", run.errors
    assert (s["sent"], s["succeeded"], s["failed"]) == (50, 47, 3)
    assert conversion.state()["stats"]["status"].get("200", 0) - before == 1  # no splits
    owed = workspace.owed("events_to_cnv", key="id")
    assert {str(k) for k in owed} == orphans
    assert all(e == "rejected: contact_not_found: no contact matches userId or email"
               for e in owed.values()), owed
    assert len(conversion.events()) == 47


