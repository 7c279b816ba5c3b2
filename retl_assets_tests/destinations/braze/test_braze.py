"""Braze as a user sets it up: contacts mirrored as user attributes by external_id, and the
events table tracked as custom events."""

from __future__ import annotations

import re

import pytest

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.braze import BrazeEmulator, build_braze_app

KEY = "braze-test-key"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  braze:
    type: braze
    api_key: {{env: BRAZE_API_KEY}}
    base_url: {url}   # or instance: iad-01 for https://rest.iad-01.braze.com
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
      SELECT id AS event_id, contact_id, name, occurred_at FROM events
syncs:
  contacts_to_braze:
    model: contacts
    destination: braze
    action: mirror                   # attributes for added and updated, delete for deleted
    match: {{external_id: userId}}     # Braze identifier: model column
    mapping:
      email: email
      first_name: first_name
      plan: plan
  events_to_braze:
    model: events
    destination: braze
    action: track
    match: {{external_id: contact_id}}
    mapping:
      name: name
      time: occurred_at
      properties.event_id: event_id
"""


@pytest.fixture
def braze(workspace, monkeypatch):
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    emu = BrazeEmulator({KEY}, rate_limit=(3000, 3.0))  # as Braze publishes it
    with EmulatorServer(build_braze_app(emu)).start() as server:
        workspace.write(PROJECT.format(url=server.url))
        yield emu


def braze_users(emu) -> dict[str, dict]:
    return {uid: {"email": a.get("email"), "first_name": a.get("first_name"),
                  "plan": a.get("plan")} for uid, a in emu.records().items()}


def model_users(ws) -> dict[str, dict]:
    return {uid: {"email": email, "first_name": first, "plan": plan}
            for uid, email, first, plan in ws.sql("SELECT id, email, first_name, plan "
                                                  "FROM contacts")}


def test_events_are_tracked_on_their_users(workspace, braze):
    assert workspace.sync().status == "success"
    run = workspace.sync("events")
    assert run.status == "success", run.errors
    assert run.syncs["events_to_braze"]["succeeded"] == 50
    tracked = {e["properties"]["event_id"]: (u["external_id"], e["name"], e["time"])
               for u in braze.users() for e in u["events"]}
    rows = workspace.sql("SELECT id, contact_id, name, "
                         "strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%gZ') FROM events")
    assert tracked == {i: (c, n, t) for i, c, n, t in rows}


def test_a_batch_of_only_bad_rows_is_rejected_row_by_row_in_one_request(workspace, braze):
    # With no valid object Braze answers 400 "Valid data must be provided...", still naming
    # each object: every row is rejected from that one answer, no batch is halved.
    workspace.sql("UPDATE contacts SET email = 'bad-' || id")
    run = workspace.sync()
    s = run.syncs["contacts_to_braze"]
    assert run.status == "success", run.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (300, 0, 300, 300)
    assert braze.state()["stats"]["status"] == {"400": 4}  # 300 rows, 75 a request
    assert braze.records() == {}
    owed = workspace.owed("contacts_to_braze")
    assert owed["u000001"] == "rejected: Invalid 'email' value: 'bad-u000001' is not a " \
                              "valid email address"
    workspace.sql("UPDATE contacts SET email = 'user' || id || '@example.com'")
    fixed = workspace.sync()
    assert fixed.syncs["contacts_to_braze"]["owed"] == 0
    assert braze_users(braze) == model_users(workspace)


def test_429s_are_waited_out_until_the_rate_limit_reset(workspace, braze):
    braze.set_faults(rate_429=0.3, retry_after=0.2)  # X-RateLimit-Reset ~0.2 s ahead
    run = workspace.sync()
    s = run.syncs["contacts_to_braze"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (300, 0)
    assert braze.state()["stats"]["status"].get("429", 0) > 0
    assert braze_users(braze) == model_users(workspace)


# --- update-only ------------------------------------------------------------------------------

def braze_url(ws) -> str:
    return ws.project.config.destinations["braze"].base_url


def seed(workspace, *attributes: dict) -> None:
    """Users someone else made in Braze before retl syncs, through its /users/track."""
    import httpx

    answer = httpx.post(f"{braze_url(workspace)}/users/track",
                        json={"attributes": list(attributes)},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert answer.status_code == 201, answer.text


def test_an_update_sync_updates_the_users_braze_has_and_creates_no_other(workspace, braze):
    seed(workspace, *({"external_id": f"u{i:06d}", "plan": "old", "first_name": "Old"}
                      for i in range(1, 11)),
         {"external_id": "not-in-the-model", "plan": "theirs"})
    workspace.write(PROJECT.format(url=braze_url(workspace))
                    .replace("action: mirror", "action: update"))
    before = dict(braze.state()["stats"])
    first = workspace.sync()
    s = first.syncs["contacts_to_braze"]
    assert first.status == "success", first.errors
    # Braze's answer counts objects queued, not users found: the 290 rows whose user Braze
    # does not have are delivered too, and stay out of Braze.
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (300, 300, 0, 0)
    model = model_users(workspace)
    assert braze_users(braze) == {**{uid: model[uid] for uid in model
                                     if uid <= "u000010"},
                                  "not-in-the-model": {"email": None, "first_name": None,
                                                       "plan": "theirs"}}
    stats = braze.state()["stats"]
    assert (stats["created"] - before["created"], stats["updated"] - before["updated"],
            stats["skipped"] - before["skipped"]) == (0, 10, 290)
    assert stats["contract_violations"] == []

    workspace.sql("""
        INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1, now());
        UPDATE contacts SET plan = 'platinum' WHERE id IN ('u000005', 'u000200');
        DELETE FROM contacts WHERE id = 'u000003';
    """)
    before = dict(braze.state()["stats"])
    second = workspace.sync()
    s = second.syncs["contacts_to_braze"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["owed"]) == (3, 3, 0)  # the delete is not taken
    users = braze_users(braze)
    assert users["u000005"]["plan"] == "platinum"
    assert "u000003" in users and "n1" not in users and "u000200" not in users
    stats = braze.state()["stats"]
    assert (stats["created"] - before["created"], stats["updated"] - before["updated"],
            stats["skipped"] - before["skipped"], stats["deleted"]) == (0, 1, 2, 0)


def test_an_update_sync_may_take_only_updated_rows(workspace, braze):
    seed(workspace, {"external_id": "u000001", "plan": "old"},
         {"external_id": "u000002", "plan": "old"})
    workspace.write(PROJECT.format(url=braze_url(workspace)).replace(
        "action: mirror", "action: update\n    records: updated"))
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs["contacts_to_braze"]["sent"] == 0  # every row is new: none taken
    workspace.sql("UPDATE contacts SET plan = 'platinum' WHERE id = 'u000002'")
    second = workspace.sync()
    assert second.syncs["contacts_to_braze"]["succeeded"] == 1, second.errors
    assert {u: a["plan"] for u, a in braze.records().items()} == {"u000001": "old",
                                                                  "u000002": "platinum"}


UPDATE_ONLY_DELETES = ("action: mirror", "action: update\n    records: deleted")
UPDATE_ONLY_FLAG = ("      plan: plan\n",
                    "      plan: plan\n      _update_existing_only: {value: false}\n")


@pytest.mark.parametrize("edits, refusal", [
    ([UPDATE_ONLY_DELETES],
     (r"syncs\.contacts_to_braze\.records: a Braze `update` sync updates users from added "
      r"or updated rows; Braze has no update-only delete")),
    ([("action: mirror", "action: update"), UPDATE_ONLY_FLAG],
     (r"syncs\.contacts_to_braze\.mapping\._update_existing_only: a Braze `update` sync "
      r"always sends it as true")),
])
def test_what_braze_cannot_do_update_only_is_refused_before_anything_is_sent(
        workspace, braze, monkeypatch, edits, refusal):
    from retl_assets.inspect import validate

    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    text = PROJECT.format(url=braze_url(workspace))
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    workspace.write(text)
    problems, _ = validate()
    assert any(re.search(refusal, p) for p in problems), problems
    run = workspace.sync()
    assert run.status == "failure"
    assert any(re.search(refusal, e) for e in run.errors), run.errors
    assert braze.state()["stats"]["requests"] == 0


def test_a_create_only_sync_is_refused_at_load(workspace, braze):
    from retl_assets.errors import ProjectError
    from retl_assets.project import load_project

    path = workspace.write(PROJECT.format(url=braze_url(workspace))
                           .replace("action: mirror", "action: create"))
    with pytest.raises(ProjectError, match=r"syncs\.contacts_to_braze\.action: braze cannot "
                                           r"tell a new record from an existing one"):
        load_project(path)
