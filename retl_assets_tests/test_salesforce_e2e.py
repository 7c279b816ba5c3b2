"""Salesforce as a user sets it up: contacts mirrored by an external id field.

The first tests run real syncs through sObject Collections; the last ones drive the Bulk API
2.0 flow (salesforce/bulk.py) directly, since the shared engine does not route to it yet.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from retl_assets.destinations.base import Record
from retl_assets.destinations.salesforce.writer import SalesforceDestination
from retl_assets.destinations.salesforce.bulk import BulkSettings
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.salesforce import SalesforceEmulator, build_salesforce_app
from retl_assets.errors import AuthError
from retl_assets.project.schema import SyncConfig

TOKEN = "00D-test-session"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  sfdc:
    type: salesforce
    access_token: {{env: SALESFORCE_TOKEN}}
    instance_url: {url}            # your org: https://<domain>.my.salesforce.com
models:
  contacts:
    source: warehouse
    primary_key: id
    sql: |
      SELECT id, email, first_name, 'Person ' || id AS last_name, plan FROM contacts
syncs:
  contacts_to_salesforce:
    model: contacts
    destination: sfdc
    object: Contact
    action: mirror                 # upsert added and updated, delete deleted
    match: {{External_Id__c: id}}    # external id field: model column
    mapping:
      Email: email
      FirstName: first_name
      LastName: last_name
      Plan__c: plan
"""
SYNC = "contacts_to_salesforce"


def serve(workspace, monkeypatch, **limits):
    monkeypatch.setenv("SALESFORCE_TOKEN", TOKEN)
    emu = SalesforceEmulator({TOKEN}, **limits)
    server = EmulatorServer(build_salesforce_app(emu)).start()
    workspace.write(PROJECT.format(url=server.url))
    return emu, server


@pytest.fixture
def salesforce(workspace, monkeypatch):
    # An Enterprise org's published floor: 100,000 requests a rolling day, 25 long-running
    # requests at once.
    emu, server = serve(workspace, monkeypatch, daily_limit=100_000, concurrent_limit=25)
    with server:
        yield emu


def org_contacts(emu) -> dict[str, dict]:
    return {r["External_Id__c"]: {"email": r.get("Email"), "first": r.get("FirstName"),
                                  "plan": r.get("Plan__c")}
            for r in emu.records("Contact").values()}


def model_contacts(ws) -> dict[str, dict]:
    return {i: {"email": e, "first": f, "plan": p}
            for i, e, f, p in ws.sql("SELECT id, email, first_name, plan FROM contacts")}


def owed_errors(ws) -> dict[str, str]:
    store = ws.store
    ledger = store.ledger_path(SYNC, store.sync_state(SYNC))
    return dict(duckdb.sql(f"SELECT id, __retl_error FROM read_parquet('{ledger}')").fetchall())


def test_mirror_creates_updates_and_deletes_exactly_the_changes(workspace, salesforce):
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs[SYNC]["succeeded"] == 300
    assert org_contacts(salesforce) == model_contacts(workspace)
    ids_before = {r["External_Id__c"]: i for i, r in salesforce.records("Contact").items()}

    workspace.sql("""
        INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1, now());
        UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
        DELETE FROM contacts WHERE id IN ('u000020', 'u000021');
    """)
    before = dict(salesforce.state()["stats"])
    second = workspace.sync()
    s = second.syncs[SYNC]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (4, 4, 0, 0)
    assert org_contacts(salesforce) == model_contacts(workspace)
    after = salesforce.state()["stats"]
    assert (after["created"] - before["created"], after["updated"] - before["updated"],
            after["deleted"] - before["deleted"]) == (1, 1, 2)
    # The update landed on the same Salesforce record, found by its external id.
    ids_after = {r["External_Id__c"]: i for i, r in salesforce.records("Contact").items()}
    assert ids_after["u000010"] == ids_before["u000010"]
    assert after["contract_violations"] == []


def test_invalid_emails_are_rejected_one_by_one_and_land_once_fixed(workspace, salesforce):
    workspace.sql("UPDATE contacts SET email = 'not-an-email' WHERE id IN ('u000005', 'u000050')")
    run = workspace.sync()
    s = run.syncs[SYNC]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (298, 2, 2)
    assert len(salesforce.records("Contact")) == 298
    owed = owed_errors(workspace)
    assert set(owed) == {"u000005", "u000050"}
    assert all("rejected" in e and "INVALID_EMAIL_ADDRESS" in e and "[Email]" in e
               for e in owed.values()), owed
    # One request per 200 records: the bad ones did not cost a split.
    assert salesforce.state()["stats"]["daily_requests"] == 2

    workspace.sql("UPDATE contacts SET email = 'fixed' || id || '@example.com' "
                  "WHERE id IN ('u000005', 'u000050')")
    fixed = workspace.sync()
    assert fixed.syncs[SYNC]["owed"] == 0
    assert org_contacts(salesforce) == model_contacts(workspace)


def test_locked_rows_are_sent_again_within_the_run(workspace, salesforce):
    # Another transaction holds a fifth of the rows on each attempt (UNABLE_TO_LOCK_ROW):
    # the rest of each request lands, and the locked ones are sent again until they land,
    # in this same run; nothing is left owed for the next.
    salesforce.lock_rate = 0.2
    run = workspace.sync()
    s = run.syncs[SYNC]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["unsent"], s["owed"]) == (300, 0, 0, 0)
    assert org_contacts(salesforce) == model_contacts(workspace)
    # Only the locked records went again, alone: far fewer than 2 more whole requests each.
    requests = salesforce.state()["stats"]["daily_requests"]
    assert 2 < requests < 20


def test_a_field_the_org_lacks_fails_the_run_naming_it_and_commits_nothing(workspace,
                                                                             monkeypatch):
    from retl_assets.emulators.salesforce.store import SObjectType

    contact = SObjectType("Contact", "003", frozenset({"LastName"}), fields=frozenset(
        {"Email", "FirstName", "LastName", "Plan__c"}))
    emu, server = serve(workspace, monkeypatch, objects={"Contact": contact})
    path = workspace.root / "retl.yaml"
    path.write_text(path.read_text().replace("Plan__c: plan", "Plan_Typo__c: plan"))
    with server:
        run = workspace.sync()
    assert run.status == "failure"
    assert any("destination 'sfdc' refused the sync's setup" in e and "Plan_Typo__c" in e
               for e in run.errors), run.errors
    assert emu.records("Contact") == {}
    assert workspace.store.sync_state(SYNC).cursor is None


def test_test_connection_tells_a_spent_org_limit_from_a_bad_token(workspace, monkeypatch):
    from retl_assets.inspect import test_connection

    emu, server = serve(workspace, monkeypatch, daily_limit=1)
    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    with server:
        assert test_connection("sfdc")[0]  # uses the one request of the day
        ok, said = test_connection("sfdc")
        assert not ok and "token is good" in said and "REQUEST_LIMIT_EXCEEDED" in said
        monkeypatch.setenv("SALESFORCE_TOKEN", "wrong")
        ok, said = test_connection("sfdc")
        assert not ok and "refused the credentials" in said


def add_rows(ws, n: int) -> None:
    ws.sql(f"""INSERT INTO contacts SELECT 'bulk-' || i, 'bulk' || i || '@example.com', 'B',
               'free', 1, TIMESTAMP '2026-01-01' FROM range({n}) t(i)""")


def test_twenty_thousand_rows_stay_within_the_org_limits(workspace, salesforce):
    add_rows(workspace, 19_700)
    run = workspace.sync()
    s = run.syncs[SYNC]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20_000, 0)
    stats = salesforce.state()["stats"]
    assert stats["max_requests_in_window"] <= 100_000
    # Over bulk_threshold (2,000), the changeset went as one Bulk API 2.0 job: create, upload,
    # close, a few polls, results; not 100 collection requests.
    assert stats["daily_requests"] < 20
    assert stats["max_concurrent"] <= 4  # the client's own cap, far under the org's 25
    assert stats["limit_exceeded"] == {"TotalRequests": 0, "ConcurrentRequests": 0}
    assert len(salesforce.records("Contact")) == 20_000


def test_a_spent_daily_allocation_stops_cleanly_and_the_rest_lands_next_day(
        workspace, monkeypatch):
    # The org's allocation scaled down to 60 requests, so 20,000 rows (100 requests) spend it.
    emu, server = serve(workspace, monkeypatch, daily_limit=60)
    with server:
        # Collections only (no bulk job), so the allocation is spent request by request.
        path = workspace.root / "retl.yaml"
        path.write_text(path.read_text().replace(
            "    instance_url:", "    bulk_threshold: null\n    instance_url:"))
        add_rows(workspace, 19_700)
        run = workspace.sync()
        s = run.syncs[SYNC]
        assert run.status == "failure"
        assert any("daily API request limit" in e for e in run.errors), run.errors
        assert s["succeeded"] == 12_000 and s["owed"] == 8_000
        assert len(emu.records("Contact")) == 12_000
        # Stopping is at once: only requests already in flight met the refusal.
        assert emu.state()["stats"]["limit_exceeded"]["TotalRequests"] <= 4

        emu.restore_allowance()
        later = workspace.sync()
        assert later.status == "success", later.errors
        assert later.syncs[SYNC]["owed"] == 0
        assert len(emu.records("Contact")) == 20_000


def test_a_wrong_token_stops_at_once_and_commits_nothing(workspace, salesforce, monkeypatch):
    monkeypatch.setenv("SALESFORCE_TOKEN", "wrong")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'sfdc' refused the credentials" in e for e in run.errors), run.errors
    assert any("INVALID_SESSION_ID" in e for e in run.errors), run.errors
    assert salesforce.records("Contact") == {}
    assert workspace.store.sync_state(SYNC).cursor is None


# -- the Bulk API 2.0 flow, driven directly ---------------------------------------------------


@pytest.fixture
def bulk_org():
    """Start an emulator and make a writer for it; yields (make_writer, emulator)."""
    opened = []

    def start(**limits):
        emu = SalesforceEmulator({TOKEN}, **limits)
        server = EmulatorServer(build_salesforce_app(emu)).start()
        opened.append(server)

        def writer(token: str = TOKEN, **settings):
            settings.setdefault("poll_s", 0.01)
            dest = SalesforceDestination("sfdc", token, server.url,
                                         bulk=BulkSettings(**settings))
            return dest.writer(SYNC, SyncConfig(model="contacts", destination="sfdc",
                                                action="mirror", object="Contact",
                                                match={"External_Id__c": "id"}))
        return writer, emu

    yield start
    for server in opened:
        server.stop()


def contact_records(n: int, bad: set[int] = frozenset()) -> list[Record]:
    out = []
    for i in range(n):
        body = {"attributes": {"type": "Contact"}, "Email": "oops" if i in bad else
                f"c{i}@example.com", "FirstName": None if i % 7 == 0 else f"F{i}",
                "LastName": f"L{i}", "External_Id__c": f"k{i}"}
        out.append(Record(f"m{i}", f"k{i}", json.dumps(body), "upsert"))
    return out


def deliver(writer, records):
    got = []
    report = writer.deliver_bulk(records, got.extend, max_retries=2, timeout_s=10)
    return report, {o.record.key: o for o in got}


def test_bulk_job_upserts_and_matches_shuffled_results_by_external_id(bulk_org):
    make, emu = bulk_org()
    writer = make()
    assert writer.bulk_threshold == 2000
    report, got = deliver(writer, contact_records(5000, bad={3, 4000}))
    assert (report.sent, report.delivered, report.rejected, report.unsent) == (5000, 4998, 2, 0)
    assert "INVALID_EMAIL_ADDRESS: Email: invalid email address: oops [Email]" == got["k3"].error
    org = emu.records("Contact")
    # Each record got its own Salesforce id although the results came back shuffled.
    assert all(org[o.dest_id]["External_Id__c"] == key
               for key, o in got.items() if o.status == "delivered")
    assert org[got["k7"].dest_id]["FirstName"] is None  # a JSON null clears the field (#N/A)
    assert report.requests == 7  # create, upload, close, two polls, two result files
    jobs = emu.state()["jobs"]
    assert [j["state"] for j in jobs.values()] == ["JobComplete"]


def test_bulk_deletes_by_salesforce_id_and_a_second_delete_is_done(bulk_org):
    make, emu = bulk_org()
    writer = make()
    _, got = deliver(writer, contact_records(3000))
    deletes = [Record(f"d{k}", k, "{}", "delete", o.dest_id) for k, o in got.items()]
    report, _ = deliver(writer, deletes[:2500])
    assert (report.delivered, report.unsent) == (2500, 0)
    assert len(emu.records("Contact")) == 500
    again, _ = deliver(writer, deletes[:10])  # already gone: ENTITY_IS_DELETED
    assert again.delivered == 10


def test_a_failed_job_leaves_its_unprocessed_records_owed(bulk_org):
    make, emu = bulk_org(bulk_records_per_day=10_000)
    report, got = deliver(make(), contact_records(25_000))
    assert (report.delivered, report.unsent) == (10_000, 15_000)
    unsent = [o for o in got.values() if o.status == "unsent"]
    assert "ended Failed" in unsent[0].error and "Daily limit" in unsent[0].error
    assert len(emu.records("Contact")) == 10_000


def test_a_job_that_runs_too_long_is_aborted_and_stays_owed(bulk_org):
    make, emu = bulk_org(polls_to_complete=10_000)
    report, got = deliver(make(timeout_s=0.05), contact_records(2500))
    assert report.unsent == 2500
    assert "Aborted" in got["k0"].error
    assert emu.records("Contact") == {}


def test_bulk_stops_on_a_spent_allocation_and_refuses_a_wrong_token(bulk_org):
    make, emu = bulk_org(daily_limit=3)
    report, got = deliver(make(records_per_job=1000), contact_records(2500))
    assert report.unsent == 2500
    assert "stopped" in got["k2400"].error and "daily API request limit" in got["k0"].error
    with pytest.raises(AuthError, match="'sfdc' refused the credentials"):
        deliver(make(token="wrong"), contact_records(10))
