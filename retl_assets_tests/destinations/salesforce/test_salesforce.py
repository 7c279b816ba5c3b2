"""Salesforce as a user sets it up: contacts mirrored by an external id field.

The first tests run real syncs through sObject Collections; the last ones send changesets
above `bulk_threshold` as Bulk API 2.0 jobs (salesforce/bulk.py) through run_sync and the
shared engine, against the emulator and, for faults it has no knob for, a scripted org.
"""

from __future__ import annotations

import csv
import io
import json

import duckdb
import httpx
import pytest

from retl_assets.destinations.base import Record
from retl_assets.destinations.delivery import deliver
from retl_assets.destinations.salesforce.bulk import BulkSettings
from retl_assets.destinations.salesforce.writer import SalesforceDestination
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.salesforce import SalesforceEmulator, build_salesforce_app
from retl_assets.errors import AuthError
from retl_assets.project.schema import SyncConfig
from retl_assets.state.store import DEST_ID, KEYTEXT
from retl_assets.sync import run_sync

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

    _, server = serve(workspace, monkeypatch, daily_limit=1)
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


# -- Bulk API 2.0 jobs, through run_sync and the engine ---------------------------------------


@pytest.fixture
def bulk_org(workspace, monkeypatch):
    """Start an emulator for the workspace's project; yields start(**limits) -> (run, emu),
    where run(**bulk_settings) takes the model's changes (snapshot and diff, through Dagster)
    and delivers them with run_sync to a destination with those bulk settings."""
    opened = []

    def start(**limits):
        emu, server = serve(workspace, monkeypatch, **limits)
        opened.append(server)

        def run(token: str = TOKEN, **settings):
            settings.setdefault("poll_s", 0.01)
            changes = workspace.sync(assets=["models/contacts", "diffs/contacts"],
                                     allow_mass_delete=True)
            assert changes.status == "success", changes.errors
            dest = SalesforceDestination("sfdc", token, server.url, bulk=BulkSettings(**settings))
            return run_sync(workspace.project, workspace.store, SYNC, dest, max_retries=2,
                            timeout_s=10)
        run.url = server.url  # type: ignore[attr-defined]
        return run, emu

    yield start
    for server in opened:
        server.stop()


def kept_ids(ws) -> dict[str, str]:
    """The sync's map of primary key -> Salesforce id."""
    store = ws.store
    path = store.ids_path(SYNC, store.sync_state(SYNC))
    return dict(duckdb.sql(f"SELECT {KEYTEXT}, {DEST_ID} FROM read_parquet('{path}')").fetchall())


def test_bulk_job_upserts_and_matches_shuffled_results_by_external_id(workspace, bulk_org):
    run, emu = bulk_org()
    add_rows(workspace, 4700)
    workspace.sql("UPDATE contacts SET email = 'oops' WHERE id IN ('u000003', 'bulk-4000')")
    result = run()
    assert (result.sent, result.succeeded, result.rejected, result.unconfirmed,
            result.owed) == (5000, 4998, 2, 0, 2)
    assert result.by_operation == {"bulk_upsert": 4998}
    assert owed_errors(workspace)["u000003"] == (
        "rejected: INVALID_EMAIL_ADDRESS: Email: invalid email address: oops [Email]")
    assert result.requests == 7  # create, upload, close, two polls, two result files
    assert [j["state"] for j in emu.state()["jobs"].values()] == ["JobComplete"]
    # Each record got its own Salesforce id although the results came back shuffled.
    org = emu.records("Contact")
    ids = kept_ids(workspace)
    assert len(ids) == 4998 and all(org[i]["External_Id__c"] == key for key, i in ids.items())

    # The next run updates them in bulk: a null clears a field the org holds (#N/A in the CSV).
    workspace.sql("UPDATE contacts SET first_name = NULL, email = id || '@example.com' "
                  "WHERE id LIKE 'bulk-%' OR id = 'u000003'")
    again = run()
    assert (again.sent, again.succeeded, again.owed) == (4701, 4701, 0)
    after = kept_ids(workspace)
    assert len(after) == 5000 and {k: after[k] for k in ids} == ids  # the same records
    updated = [r for r in emu.records("Contact").values()
               if r["External_Id__c"].startswith("bulk-")]
    assert len(updated) == 4700 and all(r["FirstName"] is None for r in updated)


def test_bulk_deletes_by_salesforce_id_and_a_second_delete_is_done(workspace, bulk_org):
    run, emu = bulk_org()
    add_rows(workspace, 2700)
    assert run().succeeded == 3000
    ids = kept_ids(workspace)
    # Ten records are deleted in the org behind retl's back: deleting them again is done.
    early = ",".join(ids[f"bulk-{i}"] for i in range(10))
    answer = httpx.delete(f"{run.url}/services/data/v68.0/composite/sobjects",
                          params={"ids": early}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert all(r["success"] for r in answer.json())
    workspace.sql("DELETE FROM contacts WHERE id LIKE 'bulk-%' "
                  "AND CAST(substr(id, 6) AS INTEGER) < 2500")
    result = run()
    assert (result.sent, result.succeeded, result.failed, result.owed) == (2500, 2500, 0, 0)
    assert result.by_operation == {"bulk_delete": 2500}
    assert len(emu.records("Contact")) == 500
    jobs = list(emu.state()["jobs"].values())
    assert [(j["operation"], j["state"]) for j in jobs] == [("upsert", "JobComplete"),
                                                            ("delete", "JobComplete")]
    # Only the deleted keys left the sync's id map: a later delete never touches them again.
    assert set(kept_ids(workspace)) == {k for (k,) in workspace.sql("SELECT id FROM contacts")}


def test_a_failed_job_keeps_its_unprocessed_records_owed_with_the_jobs_error(workspace,
                                                                             bulk_org):
    # The org's daily bulk allowance runs out inside the job: Salesforce processes 10,000
    # records and fails the job; the other 15,000 are in neither result file.
    run, emu = bulk_org(bulk_records_per_day=10_000)
    add_rows(workspace, 24_700)
    result = run()
    assert (result.succeeded, result.rejected, result.unconfirmed, result.owed) == (
        10_000, 0, 15_000, 15_000)
    owed = set(owed_errors(workspace).values())
    [error] = owed
    assert error.startswith("unconfirmed: the destination's answer did not confirm")
    assert "ended Failed" in error and "Daily limit of bulk records exceeded" in error
    assert len(emu.records("Contact")) == 10_000


def test_a_job_that_runs_too_long_is_aborted_and_stays_owed(workspace, bulk_org):
    run, emu = bulk_org(polls_to_complete=10_000)
    add_rows(workspace, 2200)
    result = run(timeout_s=0.05)
    assert (result.succeeded, result.unconfirmed, result.owed) == (0, 2500, 2500)
    assert all("ended Aborted" in e for e in owed_errors(workspace).values())
    assert [j["state"] for j in emu.state()["jobs"].values()] == ["Aborted"]
    assert emu.records("Contact") == {}


def test_a_spent_org_limit_stops_the_jobs_cleanly_with_every_row_owed(workspace, bulk_org):
    # Seven requests a day, one job's worth (create, upload, close, two polls, two result
    # files): three jobs at once spend them before any is processed.
    run, emu = bulk_org(daily_limit=7)
    add_rows(workspace, 2200)
    result = run(records_per_job=1000)
    assert (result.sent, result.succeeded, result.unsent, result.owed) == (2500, 0, 2500, 2500)
    errors = owed_errors(workspace).values()
    assert all("stopped: the org's daily API request limit is spent" in e for e in errors)
    # Stopping is at once: each of the three jobs (run at once) met the refusal once at most.
    assert emu.state()["stats"]["limit_exceeded"]["TotalRequests"] <= 3
    assert emu.records("Contact") == {}

    emu.restore_allowance()  # the next day: the rows owed go as one job
    later = run()
    assert (later.succeeded, later.owed) == (2500, 0)
    assert len(emu.records("Contact")) == 2500


# -- job steps against a scripted org: faults the emulator has no knob for ---------------------


class ScriptedOrg:
    """A Bulk API 2.0 org in an httpx handler. `faults[step]` are answers given before the
    real one (step: create, upload, close, poll, successfulResults, failedResults); an upload
    arrives even when its answer is a fault, as one lost on the way back. `left_out`: keys
    no result file names."""

    def __init__(self, faults: dict[str, list[httpx.Response]] | None = None,
                 left_out: frozenset[str] = frozenset()):
        self.faults = {step: list(answers) for step, answers in (faults or {}).items()}
        self.left_out = left_out
        self.steps: list[str] = []
        self.rows: list[list[str]] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.step(request)
        self.steps.append(step)
        if step == "upload":
            if self.rows is not None:
                return sf_refusal(400, "BULK_API_ERROR", "Found multiple contents for job")
            self.rows = list(csv.reader(io.StringIO(request.content.decode())))
        if self.faults.get(step):
            return self.faults[step].pop(0)
        if step == "poll":
            return httpx.Response(200, json={"id": "750J", "state": "JobComplete"})
        if step == "successfulResults":
            return self.results(["sf__Id", "sf__Created"], lambda i: [f"003{i:012d}", "true"])
        if step == "failedResults":
            return self.results(["sf__Id", "sf__Error"], None)
        return httpx.Response(200 if step != "upload" else 201,
                              json={"id": "750J", "state": "Open"})

    def step(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/")
        if path.endswith("/jobs/ingest"):
            return "create"
        last = path.rsplit("/", 1)[-1]
        if last == "batches":
            return "upload"
        if last in ("successfulResults", "failedResults"):
            return last
        return "close" if request.method == "PATCH" else "poll"

    def results(self, head: list[str], row) -> httpx.Response:
        header, *body = self.rows or [[]]
        key = header.index("External_Id__c")
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow([*head, *header])
        for i, values in enumerate(body):
            if row is not None and values[key] not in self.left_out:
                w.writerow([*row(i), *values])
        return httpx.Response(200, text=out.getvalue())


def sf_refusal(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=[{"errorCode": code, "message": message}],
                          headers=headers)


def bulk_deliver(org: ScriptedOrg, n: int = 5):
    """n contacts as one bulk job through the engine's deliver(), against `org`."""
    dest = SalesforceDestination("sfdc", TOKEN, "http://sf.test",
                                 bulk=BulkSettings(poll_s=0.001))
    writer = dest.writer(SYNC, SyncConfig(model="contacts", destination="sfdc",
                                          action="mirror", object="Contact",
                                          match={"External_Id__c": "id"}))
    records = [Record(f"m{i}", f"k{i}", json.dumps({
        "attributes": {"type": "Contact"}, "LastName": f"L{i}", "External_Id__c": f"k{i}"}),
        "bulk_upsert") for i in range(n)]
    seen = []
    report = deliver(writer, records, seen.extend, max_retries=3,
                     transport=httpx.MockTransport(org))
    return report, {o.record.key: o for o in seen}


def test_records_a_jobs_results_leave_out_stay_owed_as_unconfirmed():
    report, got = bulk_deliver(ScriptedOrg(left_out=frozenset({"k1", "k3"})))
    assert (report.delivered, report.unconfirmed) == (3, 2)
    assert got["k0"].dest_id == "003000000000000"
    assert got["k1"].status == "unconfirmed" and got["k1"].dest_id is None
    assert "did not confirm" in got["k1"].error
    assert "bulk job 750J ended JobComplete" in got["k1"].error


def test_429s_and_server_errors_on_job_steps_are_retried_by_the_engine():
    busy = sf_refusal(429, "REQUEST_LIMIT", "slow down", **{"Retry-After": "0"})
    org = ScriptedOrg(faults={
        "create": [busy], "upload": [sf_refusal(503, "SERVER_UNAVAILABLE", "down")],
        "poll": [httpx.Response(500)], "successfulResults": [busy]})
    report, got = bulk_deliver(org)
    assert {o.status for o in got.values()} == {"delivered"}
    # The upload arrived although its answer was lost; resent, it was refused as a second
    # one (BULK_API_ERROR), which means it is in.
    assert org.steps == ["create", "create", "upload", "upload", "close", "poll", "poll",
                         "successfulResults", "successfulResults", "failedResults"]
    assert (report.rate_limited, report.retries) == (2, 2)


def test_a_refused_step_leaves_the_batch_unsent_without_splitting_it():
    org = ScriptedOrg(faults={"create": [sf_refusal(400, "INVALIDJOB", "no such job")]})
    report, got = bulk_deliver(org)
    assert org.steps == ["create"]  # not halved into ever more jobs
    assert report.unsent == 5 and report.splits == 0
    assert "creating a bulk job: HTTP 400: INVALIDJOB: no such job" in got["k0"].error


def test_an_auth_failure_mid_job_stops_the_run():
    org = ScriptedOrg(faults={"poll": [sf_refusal(401, "INVALID_SESSION_ID",
                                                  "Session expired or invalid")]})
    with pytest.raises(AuthError, match="'sfdc' refused the credentials.*INVALID_SESSION_ID"):
        bulk_deliver(org)
    assert org.steps[-1] == "poll"


def test_a_wrong_token_stops_a_bulk_run_and_commits_nothing(workspace, bulk_org):
    run, emu = bulk_org()
    add_rows(workspace, 2200)
    with pytest.raises(AuthError, match="'sfdc' refused the credentials"):
        run(token="wrong")
    assert emu.records("Contact") == {}
    assert workspace.store.sync_state(SYNC).cursor is None
