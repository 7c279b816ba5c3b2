"""HubSpot as a user sets it up from the README: contacts mirrored by email, companies
matched by their (not unique) domain, associations, and the create-only and update-only
modes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial

import duckdb
import httpx
import pytest

from retl_assets.destinations import hubspot as hubspot_destination
from retl_assets.destinations.base import UNCONFIRMED, Record
from retl_assets.destinations.delivery import Outcome, deliver
from retl_assets.emulators import EmulatorServer, HubSpotEmulator, build_hubspot_app
from retl_assets.project.schema import SyncConfig
from retl_assets.state.store import DEST_ID, KEYTEXT

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
    # A portal as HubSpot ships it: email is unique, a company's domain is not.
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


def test_contacts_are_associated_with_their_company_by_domain(workspace, portal):
    hs = portal()
    workspace.write(ASSOCIATED.format(url=hs.url))
    hubspot = hs.emu
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
    # Domain is not unique: the companies were found by search, never read by domain.
    assert hs.count("POST", "/crm/v3/objects/companies/search") >= 1
    assert hs.count("POST", "/crm/v3/objects/companies/batch/read") == 0
    assert stats["max_searches_in_window"] <= 5

    # A contact that moves to another company is linked to it too.
    workspace.sql("UPDATE contacts SET company_id = 2 WHERE id = 'u000001'")
    moved = workspace.sync("contacts")
    assert moved.syncs["contacts_to_crm"]["succeeded"] == 1
    email = workspace.sql("SELECT email FROM contacts WHERE id = 'u000001'")[0][0]
    domain = workspace.sql("SELECT domain FROM companies WHERE id = 2")[0][0]
    assert (email, domain) in associated_pairs(hubspot)

    # A domain two HubSpot companies share: the contact is not linked to either.
    twin = hs.create("companies", {"domain": "company3.example.com", "name": "Twin"})[0]
    workspace.sql("UPDATE contacts SET company_id = 3 WHERE id = 'u000002'")
    shared = workspace.sync("contacts")
    assert shared.syncs["contacts_to_crm"]["owed"] == 1
    [why] = workspace.owed("contacts_to_crm", key="id").values()
    assert why.startswith("rejected: association: 2 companies in HubSpot have domain "
                          "company3.example.com (ids ") and why.endswith(
        f", {twin}); retl will not guess which to link"), why


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


# --- a recorded portal: which calls the writer made ------------------------------------------

class Recorder:
    """ASGI middleware in front of the emulator: (method, path, status) of every request."""

    def __init__(self, app):
        self.app, self.calls = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def answer(message):
            if message["type"] == "http.response.start":
                self.calls.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, answer)


@dataclass
class Portal:
    emu: HubSpotEmulator
    url: str
    calls: list[tuple[str, str, int]]

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.calls if m == method and p == path)

    def create(self, object_type: str, *properties: dict) -> list[str]:
        """Records someone made in HubSpot, in order; their ids."""
        answer = httpx.post(f"{self.url}/crm/v3/objects/{object_type}/batch/create",
                            json={"inputs": [{"properties": p} for p in properties]},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert answer.status_code == 201, answer.text
        by_value = {json.dumps(r["properties"].get("domain") or r["properties"]["email"]): r["id"]
                    for r in answer.json()["results"]}
        return [by_value[json.dumps(p.get("domain") or p["email"])] for p in properties]

    def archive(self, object_type: str, rid: str) -> None:
        answer = httpx.post(f"{self.url}/crm/v3/objects/{object_type}/batch/archive",
                            json={"inputs": [{"id": rid}]},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert answer.status_code == 204


@pytest.fixture
def portal(workspace, monkeypatch):
    """Start HubSpot portals (emulator options as given) behind a recorder."""
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    servers = []

    def start(**options) -> Portal:
        emu = HubSpotEmulator({TOKEN}, rate_limit=(100, 10.0), **options)
        recorder = Recorder(build_hubspot_app(emu))
        servers.append(EmulatorServer(recorder).start())
        return Portal(emu, servers[-1].url, recorder.calls)

    yield start
    for server in servers:
        server.stop()


COMPANIES = """
sources:
  warehouse: {{type: duckdb, path: warehouse.duckdb}}
destinations:
  crm:
    type: hubspot
    access_token: {{env: HUBSPOT_TOKEN}}
    base_url: {url}{extra}
models:
  companies:
    source: warehouse
    primary_key: id
    sql: SELECT id, name, domain FROM companies
syncs:
  companies_to_crm:
    model: companies
    destination: crm
    object: companies
    action: {action}
    match: {{domain: domain}}
    mapping:
      name: name
"""


def companies_project(ws, hs: Portal, action: str = "mirror", extra: str = "") -> None:
    ws.write(COMPANIES.format(url=hs.url, extra=extra, action=action))


def crm_companies(emu) -> dict[str, str]:
    return {r["properties"]["domain"].lower(): r["properties"].get("name")
            for r in emu.records("companies").values()}


def model_companies(ws) -> dict[str, str]:
    return dict(ws.sql("SELECT domain, name FROM companies"))


def kept_ids(ws, sync: str) -> dict[str, str]:
    """The HubSpot id retl keeps for each primary key."""
    store = ws.store
    path = store.ids_path(sync, store.sync_state(sync))
    return dict(duckdb.sql(f"SELECT {KEYTEXT}, {DEST_ID} FROM read_parquet('{path}')").fetchall())


# --- companies matched by domain, which HubSpot does not keep unique ----------------------------

def test_companies_are_found_by_domain_created_once_then_updated_by_their_id(workspace, portal):
    hs = portal()
    [held] = hs.create("companies", {"domain": "COMPANY3.example.com", "name": "Old name"})
    hs.calls.clear()
    companies_project(workspace, hs)
    first = workspace.sync("companies")
    s = first.syncs["companies_to_crm"]
    assert first.status == "success", first.errors
    assert (s["sent"], s["succeeded"], s["owed"]) == (20, 20, 0)
    assert crm_companies(hs.emu) == model_companies(workspace)
    companies = hs.emu.records("companies")
    # The company HubSpot had was found by search and updated, not made a second time.
    assert len(companies) == 20 and companies[held]["properties"]["name"] == "Company 3"
    assert kept_ids(workspace, "companies_to_crm")["3"] == held
    assert hs.count("GET", "/crm/v3/properties/companies/domain") == 1  # asked once a run
    assert hs.count("POST", "/crm/v3/objects/companies/search") == 1
    assert hs.count("POST", "/crm/v3/objects/companies/batch/create") == 1
    assert hs.count("POST", "/crm/v3/objects/companies/batch/upsert") == 0
    ids = {r["properties"]["domain"].lower(): i for i, r in companies.items()}

    hs.calls.clear()
    workspace.sql("""UPDATE companies SET name = 'Renamed' WHERE id = 5;
                     UPDATE companies SET domain = 'moved.example.com' WHERE id = 6;
                     DELETE FROM companies WHERE id = 7""")
    second = workspace.sync("companies")
    s = second.syncs["companies_to_crm"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["owed"]) == (3, 3, 0)
    after = hs.emu.records("companies")
    assert len(after) == 19 and crm_companies(hs.emu) == model_companies(workspace)
    assert after[ids["company5.example.com"]]["properties"]["name"] == "Renamed"
    assert after[ids["company6.example.com"]]["properties"]["domain"] == "moved.example.com"
    # Records retl wrote go by their HubSpot id: nothing searched, nothing created.
    assert [p for _, p, _ in hs.calls] == ["/crm/v3/objects/companies/batch/update",
                                           "/crm/v3/objects/companies/batch/archive"]
    assert hs.emu.state()["stats"]["contract_violations"] == []


def test_a_domain_two_hubspot_companies_share_is_rejected_with_their_ids(workspace, portal):
    hs = portal()
    twins = hs.create("companies", {"domain": "company4.example.com", "name": "Twin A"},
                      {"domain": "Company4.example.com", "name": "Twin B"})
    companies_project(workspace, hs, action="upsert")
    run = workspace.sync("companies")
    s = run.syncs["companies_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["rejected"], s["owed"]) == (19, 1, 1)
    assert workspace.owed("companies_to_crm", key="id") == {4: (
        f"rejected: 2 companies in HubSpot have domain company4.example.com (ids {twins[0]}, "
        f"{twins[1]}); retl will not guess which to update")}
    records = hs.emu.records("companies")
    assert len(records) == 21  # 19 made, neither twin touched
    assert [records[t]["properties"]["name"] for t in twins] == ["Twin A", "Twin B"]

    hs.archive("companies", twins[1])  # someone merges the twins in HubSpot
    again = workspace.sync("companies")
    assert (again.syncs["companies_to_crm"]["succeeded"], again.syncs["companies_to_crm"]
            ["owed"]) == (1, 0)
    assert hs.emu.records("companies")[twins[0]]["properties"]["name"] == "Company 4"


@pytest.mark.parametrize("extra", ["", "\n    batch_size: 1"], ids=["one-batch", "parallel"])
def test_model_rows_sharing_a_new_domain_make_one_company(workspace, portal, extra):
    hs = portal()
    workspace.sql("""DELETE FROM companies WHERE id > 4;
                     UPDATE companies SET domain = 'shared.example.com' WHERE id IN (1, 2, 3)""")
    # In one batch, or one row a request with all four in flight and each answer slow: three
    # rows would create the same domain, and none sees the others' company in a search.
    hs.emu.set_faults(latency_ms=100)
    companies_project(workspace, hs, action="upsert", extra=extra)
    run = workspace.sync("companies")
    s = run.syncs["companies_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (4, 0)
    shared = [i for i, r in hs.emu.records("companies").items()
              if r["properties"]["domain"] == "shared.example.com"]
    assert len(shared) == 1 and len(hs.emu.records("companies")) == 2
    ids = kept_ids(workspace, "companies_to_crm")
    assert ids["1"] == ids["2"] == ids["3"] == shared[0]


def test_a_portal_whose_domain_is_unique_upserts_and_reads_companies_by_it(workspace, portal):
    hs = portal(unique_properties={"contacts": {"email"}, "companies": {"domain"}})
    workspace.write(ASSOCIATED.format(url=hs.url))
    run = workspace.sync("companies")
    assert run.status == "success", run.errors
    assert run.syncs["companies_to_crm"]["succeeded"] == 20
    assert crm_companies(hs.emu) == model_companies(workspace)
    assert hs.count("POST", "/crm/v3/objects/companies/batch/upsert") == 1
    linked = workspace.sync("contacts")
    assert linked.status == "success", linked.errors
    assert linked.syncs["contacts_to_crm"]["owed"] == 0 and len(associated_pairs(hs.emu)) == 300
    # Asked once in each run; then found by batch/read, never by search.
    assert hs.count("GET", "/crm/v3/properties/companies/domain") == 2
    assert hs.count("POST", "/crm/v3/objects/companies/batch/read") >= 1
    assert hs.count("POST", "/crm/v3/objects/companies/search") == 0


def test_searches_over_the_per_second_limit_wait_about_a_second(workspace, portal):
    # HubSpot allows 5 searches a second; this portal 1, so parallel searches get 429 SECONDLY.
    hs = portal(search_rate_limit=(1, 1.0))
    companies_project(workspace, hs, action="upsert", extra="\n    batch_size: 5")
    run = workspace.sync("companies")
    s = run.syncs["companies_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20, 0)
    assert hs.emu.state()["stats"]["rate_limited"]["SECONDLY"] >= 1
    assert len(hs.emu.records("companies")) == 20
    assert s["duration_s"] < 9  # about a second a 429, not the ten-second window


# --- create-only and update-only --------------------------------------------------------------

def test_create_only_makes_new_contacts_and_leaves_existing_ones_alone(workspace, portal):
    hs = portal()
    [kept] = hs.create("contacts", {"email": "USER5@example.com", "firstname": "Kept",
                                    "plan": "legacy"})
    workspace.write(PROJECT.format(url=hs.url).replace("action: mirror", "action: create"))
    first = workspace.sync()
    s = first.syncs["contacts_to_crm"]
    assert first.status == "success", first.errors
    assert (s["sent"], s["succeeded"], s["owed"]) == (300, 300, 0)
    records = hs.emu.records("contacts")
    assert len(records) == 300
    assert {k: records[kept]["properties"][k] for k in ("firstname", "plan")} == {
        "firstname": "Kept", "plan": "legacy"}
    # HubSpot refused the batch holding that email (409); retl looked the emails up and
    # keeps the existing contact's id.
    assert ("POST", "/crm/v3/objects/contacts/batch/create", 409) in hs.calls
    assert kept_ids(workspace, "contacts_to_crm")["u000005"] == kept

    hs.calls.clear()
    workspace.sql("""UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
                     INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro',
                                                 1, now())""")
    second = workspace.sync()
    s = second.syncs["contacts_to_crm"]
    assert (s["sent"], s["succeeded"], s["owed"]) == (1, 1, 0)  # the new row only
    assert len(hs.emu.records("contacts")) == 301
    assert [p for _, p, _ in hs.calls] == ["/crm/v3/objects/contacts/batch/create"]


def test_create_only_companies_found_by_search_are_not_touched(workspace, portal):
    hs = portal()
    [held] = hs.create("companies", {"domain": "company2.example.com", "name": "Theirs"})
    companies_project(workspace, hs, action="create")
    run = workspace.sync("companies")
    s = run.syncs["companies_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20, 0)
    records = hs.emu.records("companies")
    assert len(records) == 20 and records[held]["properties"]["name"] == "Theirs"
    assert kept_ids(workspace, "companies_to_crm")["2"] == held
    assert hs.count("POST", "/crm/v3/objects/companies/batch/update") == 0


def test_update_only_updates_the_companies_hubspot_has_and_never_creates_one(workspace, portal):
    hs = portal()
    hs.create("companies", *({"domain": f"company{i}.example.com", "name": "Old"}
                             for i in (1, 2, 3)))
    companies_project(workspace, hs, action="update")
    first = workspace.sync("companies")
    s = first.syncs["companies_to_crm"]
    assert first.status == "success", first.errors
    assert (s["succeeded"], s["rejected"], s["owed"]) == (3, 17, 17)
    owed = workspace.owed("companies_to_crm", key="id")
    assert owed[4] == ("rejected: no HubSpot companies with domain 'company4.example.com'; an "
                       "update-only sync never creates one")
    assert sorted(crm_companies(hs.emu).values()) == ["Company 1", "Company 2", "Company 3"]

    # Once the company exists in HubSpot, its row lands on the next run.
    [c4] = hs.create("companies", {"domain": "company4.example.com"})
    second = workspace.sync("companies")
    s = second.syncs["companies_to_crm"]
    assert (s["succeeded"], s["owed"]) == (1, 16)
    assert hs.emu.records("companies")[c4]["properties"]["name"] == "Company 4"
    assert hs.emu.state()["stats"]["created"] == 4  # only the ones made here by hand


def test_update_only_contacts_go_by_email_and_missing_ones_stay_owed(workspace, portal):
    hs = portal()
    [ann] = hs.create("contacts", {"email": "user1@example.com", "firstname": "Old"})
    workspace.write(PROJECT.format(url=hs.url).replace("action: mirror", "action: update"))
    run = workspace.sync()
    s = run.syncs["contacts_to_crm"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (1, 299)
    first_name = workspace.sql("SELECT first_name FROM contacts WHERE id = 'u000001'")[0][0]
    assert hs.emu.records("contacts") == {ann: hs.emu.records("contacts")[ann]}
    assert hs.emu.records("contacts")[ann]["properties"]["firstname"] == first_name
    assert workspace.owed("contacts_to_crm")["u000002"] == (
        "rejected: no HubSpot contacts with email 'user2@example.com'; an update-only sync "
        "never creates one")
    assert hs.count("POST", "/crm/v3/objects/contacts/search") == 0  # email is unique


# --- what a job's answer accounts for, against HubSpot's shapes ---------------------------------

def company_writer(batch_size: int | None = None):
    dest = hubspot_destination.connect("d", hubspot_destination.HubSpotConfig(
        type="hubspot", access_token="t", base_url="http://hs", batch_size=batch_size))
    return dest.writer("s", SyncConfig(model="m", destination="d", action="upsert",
                                       object="companies", match={"domain": "domain"}))


def company_records(*domains: str) -> list[Record]:
    """Companies k0, k1, ... matched by these domains, none written by retl before."""
    return [Record(f"m{i}", f"k{i}", json.dumps({"idProperty": "domain", "id": d,
                                                 "properties": {"name": f"k{i}"}}), "upsert")
            for i, d in enumerate(domains)]


@pytest.mark.parametrize("status", [403, 404])
def test_a_property_hubspot_will_not_describe(status):
    """403: the token lacks the schema scope, so retl cannot tell; search works for any
    property. 404: the property does not exist, a setup error that stops the sync."""
    from retl_assets.errors import SetupError

    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.startswith("/crm/v3/properties/"):
            return httpx.Response(status, json={"status": "error", "message": "no"})
        if request.url.path.endswith("/search"):
            return httpx.Response(200, json={"total": 0, "results": []})
        [item] = json.loads(request.content)["inputs"]
        return httpx.Response(201, json={"results": [{"id": "7", **item}]})

    outcomes: list[Outcome] = []
    send = partial(deliver, company_writer(), company_records("a.io"), outcomes.extend,
                   max_retries=0, transport=httpx.MockTransport(handler))
    if status == 404:
        with pytest.raises(SetupError, match="HubSpot companies have no property 'domain'"):
            send()
        assert outcomes == []
        return
    send()
    assert [(o.status, o.dest_id) for o in outcomes] == [("delivered", "7")]
    assert paths == ["/crm/v3/properties/companies/domain", "/crm/v3/objects/companies/search",
                     "/crm/v3/objects/companies/batch/create"]


def test_a_job_delivers_only_records_an_answer_names_with_an_id():
    """Four companies, one a request (four jobs at once): a.io is found once (updated), b.io
    twice (rejected), c.io and d.io are new; the create answer for d.io names nothing. The
    first search is answered 429 SECONDLY and sent again about a second later."""
    seen: dict[str, int] = {"properties": 0, "search": 0}
    found = {"a.io": ["11"], "b.io": ["21", "22"]}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/crm/v3/properties/companies/domain":
            seen["properties"] += 1
            return httpx.Response(200, json={"name": "domain", "hasUniqueValue": False})
        body = json.loads(request.content)
        if path.endswith("/search"):
            seen["search"] += 1
            if seen["search"] == 1:
                return httpx.Response(429, json={"status": "error", "errorType": "RATE_LIMIT",
                                                 "policyName": "SECONDLY"})
            [value] = body["filterGroups"][0]["filters"][0]["values"]
            hits = [{"id": i, "properties": {"domain": value.upper()}}
                    for i in found.get(value, [])]
            return httpx.Response(200, json={"total": len(hits), "results": hits})
        if path.endswith("/batch/update"):
            return httpx.Response(200, json={"status": "COMPLETE", "results": [
                {"id": item["id"], "properties": item["properties"]} for item in body["inputs"]]})
        assert path.endswith("/batch/create"), path
        made = [{"id": "31", "properties": item["properties"]} for item in body["inputs"]
                if item["properties"]["domain"] == "C.io"]
        return httpx.Response(201, json={"status": "COMPLETE", "results": made})

    records = company_records("a.io", "b.io", "C.io", "d.io")
    outcomes: list[Outcome] = []
    started = time.monotonic()
    deliver(company_writer(batch_size=1), records, outcomes.extend, max_retries=0,
            transport=httpx.MockTransport(handler))
    by_key = {o.record.key: o for o in outcomes}
    assert {k: (o.status, o.dest_id) for k, o in by_key.items()} == {
        "k0": ("delivered", "11"), "k1": ("rejected", None), "k2": ("delivered", "31"),
        "k3": ("unconfirmed", None)}
    assert by_key["k1"].error == ("2 companies in HubSpot have domain b.io (ids 21, 22); retl "
                                  "will not guess which to update")
    assert by_key["k3"].error.startswith(UNCONFIRMED)
    assert seen == {"properties": 1, "search": 5}  # asked once for four jobs; one 429
    assert 0.9 <= time.monotonic() - started < 8
