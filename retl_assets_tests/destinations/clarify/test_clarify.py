"""Clarify as a user sets it up: people mirrored by email address, companies by domain."""

from __future__ import annotations

import pytest

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


def test_companies_are_upserted_by_domain(workspace, serve):
    clarify = serve()
    run = workspace.sync("companies")
    assert run.status == "success", run.errors
    assert run.syncs["orgs"]["succeeded"] == 20
    got = {a["domains"]["items"][0]: (a["name"], a["industry"])
           for a in clarify.records("company").values()}
    assert got == {d: (n, i) for n, d, i in workspace.sql(
        "SELECT name, domain, industry FROM companies")}


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
