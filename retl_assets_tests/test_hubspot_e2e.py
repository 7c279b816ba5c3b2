"""HubSpot as a user sets it up from the README: contacts mirrored by email."""

from __future__ import annotations

import pytest

from retl_assets.emulators import EmulatorServer, HubSpotEmulator, build_hubspot_app

TOKEN = "hs-test-token"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  crm:
    type: hubspot
    access_token: {{env: HUBSPOT_TOKEN}}
    base_url: {url}   # optional; default is the vendor's endpoint
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts
syncs:
  contacts_to_crm:
    model: contacts
    destination: crm
    object: contacts
    action: mirror                   # upsert added and updated, archive deleted
    match: {{email: email}}            # destination property: model column
    mapping:
      firstname: first_name
      plan: plan
"""


@pytest.fixture
def hubspot(workspace, monkeypatch):
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    emu = HubSpotEmulator({TOKEN}, rate_limit=(100, 10.0))
    with EmulatorServer(build_hubspot_app(emu)).start() as server:
        workspace.write(PROJECT.format(url=server.url))
        yield emu


def crm_contacts(emu) -> dict[str, dict]:
    return {r["properties"]["email"]: {"firstname": r["properties"].get("firstname"),
                                       "plan": r["properties"].get("plan")}
            for r in emu.records("contacts").values()}


def model_contacts(ws) -> dict[str, dict]:
    return {email: {"firstname": first, "plan": plan}
            for email, first, plan in ws.sql("SELECT email, first_name, plan FROM contacts")}


def test_mirror_creates_updates_and_archives_exactly_the_changes(workspace, hubspot):
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs["contacts_to_crm"]["succeeded"] == 300
    assert crm_contacts(hubspot) == model_contacts(workspace)
    ids_before = {r["properties"]["email"]: i for i, r in hubspot.records("contacts").items()}

    workspace.sql("""
        INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1, now());
        UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
        DELETE FROM contacts WHERE id IN ('u000020', 'u000021');
    """)
    stats = dict(hubspot.state()["stats"])
    second = workspace.sync()
    s = second.syncs["contacts_to_crm"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (4, 4, 0, 0)
    assert crm_contacts(hubspot) == model_contacts(workspace)
    after = hubspot.state()["stats"]
    assert (after["created"] - stats["created"], after["updated"] - stats["updated"],
            after["archived"] - stats["archived"]) == (1, 1, 2)
    # The update landed on the same HubSpot record, found by email.
    ids_after = {r["properties"]["email"]: i for i, r in hubspot.records("contacts").items()}
    assert ids_after["user10@example.com"] == ids_before["user10@example.com"]
    assert after["contract_violations"] == []


def test_invalid_emails_are_rejected_one_by_one_and_land_once_fixed(workspace, hubspot):
    workspace.sql("UPDATE contacts SET email = 'not-an-email' WHERE id IN ('u000005', 'u000050')")
    run = workspace.sync()
    s = run.syncs["contacts_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (298, 2, 2)
    assert len(hubspot.records("contacts")) == 298
    owed = workspace.owed("contacts_to_crm")
    assert set(owed) == {"u000005", "u000050"}
    assert all("rejected" in e and "INVALID_EMAIL" in e for e in owed.values()), owed
    workspace.sql("UPDATE contacts SET email = 'fixed' || id || '@example.com' "
                  "WHERE id IN ('u000005', 'u000050')")
    fixed = workspace.sync()
    assert fixed.syncs["contacts_to_crm"]["owed"] == 0
    assert crm_contacts(hubspot) == model_contacts(workspace)


def test_a_wrong_token_stops_at_once_and_commits_nothing(workspace, hubspot, monkeypatch):
    monkeypatch.setenv("HUBSPOT_TOKEN", "wrong")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'crm' refused the credentials" in e for e in run.errors), run.errors
    assert "wrong" not in " ".join(run.errors).replace("wrong token", "")
    assert hubspot.records("contacts") == {}
    assert workspace.store.sync_state("contacts_to_crm").cursor is None


def test_twenty_thousand_rows_stay_under_the_rate_limit(workspace, hubspot):
    workspace.add_bulk_contacts()
    run = workspace.sync()
    s = run.syncs["contacts_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20000, 0)
    stats = hubspot.state()["stats"]
    assert stats["max_requests_in_window"] <= 100
    assert stats["status"].get("429", 0) == 0
    assert len(hubspot.records("contacts")) == 20000


def test_a_killed_run_keeps_the_ids_it_got_so_later_deletes_still_reach_hubspot(
        workspace, hubspot):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = workspace.root / "retl.yaml"
    path.write_text(path.read_text().replace(
        "    base_url:", "    batch_size: 20\n    max_concurrency: 1\n    base_url:"))
    hubspot.set_faults(latency_ms=150)
    env = {**os.environ, "RETL_PROJECT": str(path), "DAGSTER_HOME": str(workspace.root /
           "dagster_home"), "HUBSPOT_TOKEN": TOKEN, "RETL_LEASE_TTL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "retl_assets.cli", "sync", "contacts"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while hubspot.state()["stats"]["created"] < 60:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The first record HubSpot created: its batch was answered and checkpointed long before
    # the kill (one request in flight at a time).
    first = min(hubspot.records("contacts").items(), key=lambda item: int(item[0]))[1]
    email = first["properties"]["email"]
    hubspot.set_faults(latency_ms=0)
    time.sleep(2.5)  # the killed run's lease expires
    resumed = workspace.sync()
    assert resumed.status == "success", resumed.errors
    assert len(hubspot.records("contacts")) == 300
    assert resumed.syncs["contacts_to_crm"]["sent"] < 300  # the checkpoint spared a resend
    # Deleting a contact the killed run delivered must still archive it in HubSpot.
    workspace.sql(f"DELETE FROM contacts WHERE email = '{email}'")
    run = workspace.sync()
    assert run.syncs["contacts_to_crm"]["skipped"] == 0
    emails = {r["properties"]["email"] for r in hubspot.records("contacts").values()}
    assert email not in emails and len(emails) == 299


def test_a_changed_email_updates_the_same_contact_by_its_hubspot_id(workspace, hubspot):
    assert workspace.sync().status == "success"
    ids = {r["properties"]["email"]: i for i, r in hubspot.records("contacts").items()}
    old = "user7@example.com"
    workspace.sql("UPDATE contacts SET email = 'renamed7@example.com' WHERE email = '" + old + "'")
    run = workspace.sync()
    assert run.status == "success", run.errors
    records = hubspot.records("contacts")
    # The same record now carries the new address; no second contact was created.
    assert len(records) == 300
    assert records[ids[old]]["properties"]["email"] == "renamed7@example.com"
    assert crm_contacts(hubspot) == model_contacts(workspace)
    assert hubspot.state()["stats"]["contract_violations"] == []


def test_a_contact_deleted_in_hubspot_is_upserted_again_on_its_next_update(workspace, hubspot):
    assert workspace.sync().status == "success"
    gone = next(i for i, r in hubspot.records("contacts").items()
                if r["properties"]["email"] == "user3@example.com")
    hubspot.crm.records["contacts"].pop(gone)  # someone deleted it in HubSpot
    workspace.sql("UPDATE contacts SET first_name = 'Thea' WHERE email = 'user3@example.com'")
    run = workspace.sync()
    s = run.syncs["contacts_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (1, 0)
    assert crm_contacts(hubspot) == model_contacts(workspace)
    # Its new id is the one kept: a later delete archives the new record.
    workspace.sql("DELETE FROM contacts WHERE email = 'user3@example.com'")
    assert workspace.sync().syncs["contacts_to_crm"]["succeeded"] == 1
    assert "user3@example.com" not in crm_contacts(hubspot)


ASSOCIATED = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  crm:
    type: hubspot
    access_token: {{env: HUBSPOT_TOKEN}}
    base_url: {url}
models:
  companies:
    source: warehouse
    primary_key: id
    sql: SELECT id, name, domain FROM companies
  contacts:
    source: warehouse
    primary_key: id
    sql: |
      SELECT c.id, c.email, c.first_name, co.domain AS company_domain
      FROM contacts c LEFT JOIN companies co ON co.id = c.company_id
syncs:
  companies_to_crm:
    model: companies
    destination: crm
    object: companies
    action: mirror
    match: {{domain: domain}}
    mapping:
      name: name
  contacts_to_crm:
    model: contacts
    destination: crm
    object: contacts
    action: mirror
    match: {{email: email}}
    mapping:
      firstname: first_name
    associations:
      companies: {{domain: company_domain}}   # link each contact to its company, by domain
"""


def associated_pairs(emu) -> set[tuple[str, str]]:
    contacts = {i: r["properties"]["email"] for i, r in emu.records("contacts").items()}
    companies = {i: r["properties"]["domain"] for i, r in emu.records("companies").items()}
    return {(contacts[a["fromId"]], companies[a["toId"]]) for a in emu.state()["associations"]
            if a["fromObject"] == "contacts" and a["toObject"] == "companies"}


def test_contacts_are_associated_with_their_company_by_domain(workspace, hubspot):
    url = hubspot_url(workspace)
    workspace.write(ASSOCIATED.format(url=url))
    # Contacts first: their companies are not in HubSpot yet, so each contact lands but is
    # owed with the reason, and nothing is linked.
    early = workspace.sync("contacts")
    s = early.syncs["contacts_to_crm"]
    assert early.status == "success", early.errors
    assert (s["rejected"], s["owed"]) == (300, 300)
    owed = workspace.owed("contacts_to_crm", key="id")
    assert all("no companies record with domain" in e for e in owed.values()), owed
    assert len(hubspot.records("contacts")) == 300 and associated_pairs(hubspot) == set()

    assert workspace.sync("companies").status == "success"
    run = workspace.sync("contacts")
    assert run.status == "success", run.errors
    assert run.syncs["contacts_to_crm"]["owed"] == 0
    expected = set(workspace.sql("""SELECT c.email, co.domain FROM contacts c
                                    JOIN companies co ON co.id = c.company_id"""))
    assert associated_pairs(hubspot) == expected and len(expected) == 300
    assert len(hubspot.records("contacts")) == 300  # updated by id, not created again
    stats = hubspot.state()["stats"]
    assert stats["contract_violations"] == [] and stats["max_requests_in_window"] <= 100

    # A contact that moves to another company is linked to it too.
    workspace.sql("UPDATE contacts SET company_id = 2 WHERE id = 'u000001'")
    moved = workspace.sync("contacts")
    assert moved.syncs["contacts_to_crm"]["succeeded"] == 1
    email = workspace.sql("SELECT email FROM contacts WHERE id = 'u000001'")[0][0]
    domain = workspace.sql("SELECT domain FROM companies WHERE id = 2")[0][0]
    assert (email, domain) in associated_pairs(hubspot)


def test_associations_name_the_field_when_misconfigured(workspace, hubspot, monkeypatch):
    from retl_assets.errors import ProjectError
    from retl_assets.inspect import validate

    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    url = hubspot_url(workspace)
    workspace.write(ASSOCIATED.format(url=url).replace("{domain: company_domain}",
                                                       "{domain: company_dommain}"))
    problems, _ = validate()
    assert any("syncs.contacts_to_crm.associations.companies.domain: column 'company_dommain'"
               in p for p in problems), problems
    workspace.write("""
sources: {warehouse: {type: duckdb, path: warehouse.duckdb}}
destinations:
  cio: {type: customerio, write_key: {env: HUBSPOT_TOKEN}}
models:
  contacts: {source: warehouse, primary_key: id, sql: "SELECT id, email FROM contacts"}
syncs:
  people:
    model: contacts
    destination: cio
    action: identify
    associations: {companies: {domain: email}}
""")
    with pytest.raises(ProjectError, match="syncs.people.associations: customerio has no"):
        validate()


def hubspot_url(ws) -> str:
    text = (ws.root / "retl.yaml").read_text()
    return text.split("base_url: ")[1].split()[0]
