"""Clarify as a user sets it up: people mirrored by email address, companies by domain."""

from __future__ import annotations

import httpx
import pytest

from retl_assets.destinations import open_destination
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.clarify import ClarifyEmulator, build_clarify_app

KEY = "clarify-e2e-key"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  clarify:
    type: clarify
    api_key: {{env: CLARIFY_API_KEY}}
    workspace: acme                  # the slug in app.clarify.ai/acme
    base_url: {url}   # optional; default is https://api.clarify.ai
    # Clarify's published limits are the defaults: 25 records a bulk request (batch_size
    # may lower it) and about one bulk request a second; deletes, one record each, go at
    # 10 a second (unpublished: ours). rate_limit replaces both paces with one:
    {rate_limit}
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts
  companies:
    source: warehouse
    primary_key: id
    sql: SELECT id, name, domain, industry FROM companies
syncs:
  people:
    model: contacts
    destination: clarify
    object: person
    action: mirror                   # upsert added and updated, delete deleted
    match: {{email_addresses: email}}  # any one of a person's addresses matches
    mapping:
      name.first_name: first_name
      plan: plan
  orgs:
    model: companies
    destination: clarify
    object: company
    action: upsert
    match: {{domains: domain}}
    mapping:
      name: name
      industry: industry
"""


@pytest.fixture
def serve(workspace, monkeypatch):
    monkeypatch.setenv("CLARIFY_API_KEY", KEY)
    servers = []

    def _serve(rate: tuple[int, float] | None = None) -> ClarifyEmulator:
        """Clarify's published pace on both sides, or `rate` for every write on both."""
        paces = {"rate_limit": rate, "delete_rate": rate} if rate else {}
        emu = ClarifyEmulator({KEY}, workspace="acme", **paces)
        server = EmulatorServer(build_clarify_app(emu)).start()
        servers.append(server)
        line = f'rate_limit: "{rate[0]}/{rate[1]}"' if rate else '# rate_limit: "1/1"'
        workspace.write(PROJECT.format(url=server.url, rate_limit=line))
        return emu

    yield _serve
    for server in servers:
        server.stop()


def people(emu: ClarifyEmulator) -> dict[str, dict]:
    out = {}
    for attrs in emu.records("person").values():
        [email] = attrs["email_addresses"]["items"]
        out[email] = {"first_name": attrs["name"]["first_name"], "plan": attrs["plan"]}
    return out


def model_people(ws) -> dict[str, dict]:
    return {email: {"first_name": first, "plan": plan}
            for email, first, plan in ws.sql("SELECT email, first_name, plan FROM contacts")}


def test_mirror_creates_updates_and_deletes_exactly_the_changes(workspace, serve):
    clarify = serve()  # Clarify's own pace: 300 people are 12 bulk requests, about 12 s
    with httpx.Client() as client:  # retl test-connection's call
        check = open_destination(workspace.project, "clarify").check_request(client)
        assert client.send(check).status_code == 200
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs["people"]["succeeded"] == 300
    assert people(clarify) == model_people(workspace)
    stats = clarify.state()["stats"]
    assert stats["bulk_requests"] == 12  # 25 people a request
    assert stats["max_requests_in_window"] <= 1 and stats["status"].get("429", 0) == 0
    ids_before = {a["email_addresses"]["items"][0]: i
                  for i, a in clarify.records("person").items()}

    workspace.sql("""
        INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1, now());
        UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
        DELETE FROM contacts WHERE id IN ('u000020', 'u000021', 'u000022');
    """)
    before = clarify.state()["stats"]
    second = workspace.sync()
    s = second.syncs["people"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (5, 5, 0, 0)
    assert people(clarify) == model_people(workspace)
    after = clarify.state()["stats"]
    assert (after["created"] - before["created"], after["updated"] - before["updated"],
            after["deleted"] - before["deleted"]) == (1, 1, 3)
    ids_after = {a["email_addresses"]["items"][0]: i for i, a in clarify.records("person").items()}
    assert ids_after["user10@example.com"] == ids_before["user10@example.com"]
    # (Not the pace across both runs: each run paces itself, so the second run's first
    # request may follow the first run's last within the second and be answered 429.)


def test_companies_are_upserted_by_domain(workspace, serve):
    clarify = serve()
    run = workspace.sync("companies")
    assert run.status == "success", run.errors
    assert run.syncs["orgs"]["succeeded"] == 20
    got = {a["domains"]["items"][0]: (a["name"], a["industry"])
           for a in clarify.records("company").values()}
    assert got == {d: (n, i) for n, d, i in workspace.sql(
        "SELECT name, domain, industry FROM companies")}


def test_invalid_emails_are_rejected_one_by_one_and_land_once_fixed(workspace, serve):
    # A bulk is atomic: each bad address costs its batch a few halvings, about 25 requests
    # in all. One a second (Clarify's pace) over a twentieth of a second, alike on both
    # sides, keeps this test short and still proves the pace is kept.
    clarify = serve(rate=(1, 0.05))
    workspace.sql("UPDATE contacts SET email = 'not-an-email' WHERE id IN ('u000005', 'u000050')")
    run = workspace.sync()
    s = run.syncs["people"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (298, 2, 2)
    assert len(clarify.records("person")) == 298
    owed = workspace.owed("people")
    assert set(owed) == {"u000005", "u000050"}
    assert all(e.startswith("rejected: HTTP 422: Validation Error: 'not-an-email' is not a "
                            "valid email address") for e in owed.values()), owed
    assert clarify.state()["stats"]["status"].get("429", 0) == 0

    workspace.sql("UPDATE contacts SET email = 'fixed' || id || '@example.com' "
                  "WHERE id IN ('u000005', 'u000050')")
    fixed = workspace.sync()
    assert fixed.syncs["people"]["owed"] == 0
    assert people(clarify) == model_people(workspace)


def test_twenty_thousand_rows_stay_under_the_rate_limit(workspace, serve):
    # Clarify's pace, one bulk request of 25 a second, would take 800 s for 20,000 rows.
    # The same one request over a hundredth of a second, set alike on both sides
    # (`rate_limit: "1/0.01"`), takes seconds and tests the same thing: the client never
    # sends a second bulk inside the window, and never more than 25 records in one.
    clarify = serve(rate=(1, 0.01))
    workspace.add_bulk_contacts()
    run = workspace.sync()
    s = run.syncs["people"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20000, 0)
    stats = clarify.state()["stats"]
    assert stats["max_requests_in_window"] <= 1
    assert stats["status"] == {"200": 800}  # 20,000 / 25, none refused, no 429
    assert len(clarify.records("person")) == 20000


def test_a_wrong_key_stops_at_once_and_commits_nothing(workspace, serve, monkeypatch):
    clarify = serve()
    monkeypatch.setenv("CLARIFY_API_KEY", "wrong-key")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'clarify' refused the credentials" in e for e in run.errors), run.errors
    assert "wrong-key" not in " ".join(run.errors)
    assert clarify.records("person") == {}
    assert workspace.store.sync_state("people").cursor is None


def test_a_wrong_workspace_fails_the_run_saying_so(workspace, serve):
    clarify = serve()
    path = workspace.root / "retl.yaml"
    path.write_text(path.read_text().replace("workspace: acme", "workspace: acne"))
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'clarify' refused the sync's setup" in e and "workspace" in e
               for e in run.errors), run.errors
    assert clarify.records("person") == {}
    assert workspace.store.sync_state("people").cursor is None
