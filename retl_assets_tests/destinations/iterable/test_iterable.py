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


# -- the other identifier in dataFields, and users matched by userId ---------------------------

USERS = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  iterable:
    type: iterable
    api_key: {{env: ITERABLE_API_KEY}}
    base_url: {url}
models:
  contacts:
    source: warehouse
    primary_key: id
    sql: |
      SELECT id, email, first_name, plan, {user_id} AS user_id FROM contacts
syncs:
  users:
    model: contacts
    destination: iterable
    action: mirror
    match: {{{match}}}
    mapping:
      {other}
      firstName: first_name
"""


@pytest.fixture
def serve(workspace, monkeypatch):
    """Start an emulator of a given project type and write USERS against it."""
    monkeypatch.setenv("ITERABLE_API_KEY", KEY)
    servers = []

    def _serve(project_type: str, user_id: str = "id", match: str = "email: email",
               other: str = "userId: user_id") -> IterableEmulator:
        emu = IterableEmulator({KEY}, project_type=project_type)
        server = EmulatorServer(build_iterable_app(emu)).start()
        servers.append(server)
        workspace.write(USERS.format(url=server.url, user_id=user_id, match=match, other=other))
        return emu

    yield _serve
    for server in servers:
        server.stop()


def test_an_integer_id_column_goes_in_data_fields_as_a_string(workspace, serve):
    # Iterable's userId is a string: an INTEGER column mapped to userId beside the email is
    # sent as "5", not 5 (which the emulator lists in invalidUserIds as malformed).
    emu = serve("email", user_id="CAST(substr(id, 2) AS INTEGER)")
    run = workspace.sync()
    s = run.syncs["users"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (300, 0, 0), s
    model = {email: str(int(i[1:])) for i, email in workspace.sql("SELECT id, email FROM contacts")}
    assert {u["email"]: u["userId"] for u in emu.users()} == model
    assert all(isinstance(u["userId"], str) for u in emu.users())
    assert emu.state()["stats"]["contract_violations"] == []


def test_a_malformed_user_id_beside_the_email_rejects_only_its_row(workspace, serve):
    # Matching by email, a malformed userId in dataFields comes back in invalidUserIds by
    # its own value: retl finds the row by it, and the rest of the batch is delivered.
    emu = serve("hybrid")
    workspace.sql("UPDATE contacts SET id = id || ' ' WHERE id IN ('u000005', 'u000050')")
    run = workspace.sync()
    s = run.syncs["users"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (298, 2, 2), s
    owed = workspace.owed("users", key="id")
    assert set(owed) == {"u000005 ", "u000050 "}
    assert all("rejected" in e and "invalidUserIds" in e for e in owed.values()), owed
    assert len(emu.users()) == 298
    workspace.sql("UPDATE contacts SET id = trim(id) WHERE id LIKE '% '")
    fixed = workspace.sync()
    assert fixed.syncs["users"]["owed"] == 0, fixed.syncs
    assert {u["email"]: u["userId"] for u in emu.users()} == dict(
        workspace.sql("SELECT email, id FROM contacts"))


def test_a_user_id_match_creates_users_in_an_email_based_project(workspace, serve):
    # In an email-based project a userId alone creates a user only with preferUserId: true
    # (a placeholder email); retl sends it on userId-matched users.
    emu = serve("email", match="userId: id", other="")
    run = workspace.sync()
    s = run.syncs["users"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (300, 0), s
    ids = {row[0] for row in workspace.sql("SELECT id FROM contacts")}
    assert {u["userId"] for u in emu.users()} == ids
    assert all(u["email"].endswith("@placeholder.email") for u in emu.users())
    # Turned off in the mapping, the same rows are refused (no such user): the flag is what
    # creates them.
    workspace.write(workspace.root.joinpath("retl.yaml").read_text()
                    .replace("firstName: first_name",
                             "firstName: first_name\n      preferUserId: {value: false}"))
    workspace.sql("INSERT INTO contacts VALUES ('n1', 'n1@example.com', 'Nia', 'pro', 1, now())")
    off = workspace.sync()
    assert (off.syncs["users"]["succeeded"], off.syncs["users"]["failed"]) == (0, 1)
    assert any("notFoundUserIds" in e for e in workspace.owed("users", key="id").values())
