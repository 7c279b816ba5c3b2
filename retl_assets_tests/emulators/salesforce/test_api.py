"""The Salesforce emulator, driven over real HTTP the way a delivery client would drive it."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, Faults
from retl_assets.emulators.salesforce import SalesforceEmulator, build_salesforce_app
from retl_assets.emulators.salesforce.store import SObjectType

TOKEN = "00D-session"
UPSERT = "/composite/sobjects/Contact/External_Id__c"

Serve = Callable[..., tuple[httpx.Client, SalesforceEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(token: str = TOKEN, version: str = "62.0",
               **args: Any) -> tuple[httpx.Client, SalesforceEmulator]:
        args.setdefault("tokens", {TOKEN})
        emulator = SalesforceEmulator(**args)
        server = EmulatorServer(build_salesforce_app(emulator)).start()
        client = httpx.Client(base_url=f"{server.url}/services/data/v{version}",
                              headers={"Authorization": f"Bearer {token}"}, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def contact(ext: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Contact"}, "External_Id__c": ext, **fields}


def upsert(client: httpx.Client, *records: dict[str, Any], **body: Any) -> httpx.Response:
    return client.patch(UPSERT, json={"allOrNone": False, "records": list(records), **body})


def codes(result: dict[str, Any]) -> list[str]:
    return [e["statusCode"] for e in result["errors"]]


def test_auth_needs_a_session_token_and_never_echoes_it(serve: Serve) -> None:
    client, emulator = serve(token="wrong-secret")
    refused = upsert(client, contact("a", LastName="A"))
    assert refused.status_code == 401
    assert refused.json() == [{"message": "Session expired or invalid",
                               "errorCode": "INVALID_SESSION_ID"}]
    assert "wrong-secret" not in refused.text
    ok = httpx.get(f"{client.base_url}limits", headers={"Authorization": f"OAuth {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["DailyApiRequests"]["Max"] == 100_000
    assert emulator.records("Contact") == {}


def test_upsert_creates_then_updates_by_external_id_in_request_order(serve: Serve) -> None:
    client, emulator = serve()
    first = upsert(client, contact("A-1", LastName="Ann", Email="ann@x.io"),
                   contact("B-2", LastName="Bob"))
    assert first.status_code == 200
    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    created = first.json()
    assert [(r["success"], r["created"]) for r in created] == [(True, True), (True, True)]
    assert all(len(r["id"]) == 18 and r["id"].startswith("003") for r in created)

    # External ids match case-insensitively; a field left out stays as it was.
    second = upsert(client, contact("a-1", FirstName="Annie"), contact("C-3", LastName="Cy"))
    assert [(r["id"] == created[0]["id"], r["created"]) for r in second.json()] == [
        (True, False), (False, True)]
    record = emulator.records("Contact")[created[0]["id"]]
    assert (record["LastName"], record["FirstName"], record["Email"]) == ("Ann", "Annie",
                                                                          "ann@x.io")
    stats = emulator.state()["stats"]
    assert (stats["created"], stats["updated"]) == (3, 1)


def test_bad_records_fail_alone_with_salesforce_errors(serve: Serve) -> None:
    client, emulator = serve()
    results = upsert(
        client,
        contact("ok", LastName="Fine"),
        contact("mail", LastName="M", Email="not-an-email"),
        contact("noname", Email="n@x.io"),
        contact("long", LastName="L", Description="x" * 32_001),
        contact("dup", LastName="D1"),
        contact("DUP", LastName="D2"),
        {"attributes": {"type": "Contact"}, "LastName": "No key"},
    ).json()
    assert results[0]["success"]
    assert codes(results[1]) == ["INVALID_EMAIL_ADDRESS"]
    assert results[1]["errors"][0] == {"statusCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"],
                                       "message": "Email: invalid email address: not-an-email"}
    assert results[2]["errors"][0]["message"] == "Required fields are missing: [LastName]"
    assert codes(results[3]) == ["STRING_TOO_LONG"]
    assert codes(results[4]) == codes(results[5]) == ["DUPLICATE_VALUE"]
    assert codes(results[6]) == ["MISSING_ARGUMENT"]
    assert [r["id"] for r in results[1:]] == [None] * 6
    assert len(emulator.records("Contact")) == 1
    # On update, a required field may be left out, but not emptied.
    again = upsert(client, contact("ok", Title="CEO"), contact("ok2", LastName="")).json()
    assert again[0]["success"] and codes(again[1]) == ["REQUIRED_FIELD_MISSING"]


def test_all_or_none_rolls_every_record_back(serve: Serve) -> None:
    client, emulator = serve()
    results = upsert(client, contact("a", LastName="A"), contact("b", Email="b@x.io"),
                     allOrNone=True).json()
    assert codes(results[0]) == ["ALL_OR_NONE_OPERATION_ROLLED_BACK"]
    assert codes(results[1]) == ["REQUIRED_FIELD_MISSING"]
    assert emulator.records("Contact") == {}


def test_whole_request_errors(serve: Serve) -> None:
    client, emulator = serve(objects={"Contact": SObjectType(
        "Contact", "003", frozenset({"LastName"}),
        fields=frozenset({"LastName", "Email", "External_Id__c"}))})
    too_many = upsert(client, *[contact(f"c{i}", LastName="X") for i in range(201)])
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    wrong_type = client.patch(UPSERT, json={"records": [
        {"attributes": {"type": "Lead"}, "External_Id__c": "x"}]})
    assert wrong_type.status_code == 400
    unknown = upsert(client, contact("u", LastName="U", Nickname__c="n"))
    assert unknown.status_code == 400 and unknown.json() == [{
        "message": "No such column 'Nickname__c' on sobject of type Contact",
        "errorCode": "INVALID_FIELD"}]
    not_external = client.patch("/composite/sobjects/Contact/Email", json={"records": []})
    assert not_external.status_code == 404
    assert "Provided external ID field does not exist" in not_external.json()[0]["message"]
    old, _ = serve(version="45.0")
    assert upsert(old, contact("o", LastName="O")).status_code == 404
    assert client.patch(UPSERT, content=b"{not json").status_code == 400
    assert len(emulator.state()["stats"]["contract_violations"]) == 3


def test_any_custom_object_is_served_and_references_resolve(serve: Serve) -> None:
    client, emulator = serve()
    [acme] = client.patch("/composite/sobjects/Account/External_Id__c", json={"records": [
        {"attributes": {"type": "Account"}, "External_Id__c": "acme", "Name": "Acme"}]}).json()
    response = client.patch("/composite/sobjects/Invoice__c/External_Id__c", json={"records": [
        {"attributes": {"type": "Invoice__c"}, "External_Id__c": f"inv-{key}", "Amount__c": 12.5,
         "Account__r": {"attributes": {"type": "Account"}, "External_Id__c": key}}
        for key in ("acme", "nope")]})
    found, missing = response.json()
    assert found["success"] and not missing["success"]
    assert missing["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert missing["errors"][0]["message"] == ("Foreign key external ID: nope not found for "
                                               "field External_Id__c in entity Account")
    [record] = emulator.records("Invoice__c").values()
    assert record == {"External_Id__c": "inv-acme", "Amount__c": 12.5, "Account__c": acme["id"]}


def test_delete_by_id_then_an_upsert_creates_a_new_record(serve: Serve) -> None:
    client, emulator = serve()
    ids = [r["id"] for r in upsert(client, contact("a", LastName="A"),
                                   contact("b", LastName="B")).json()]
    gone = client.delete("/composite/sobjects", params={"ids": ",".join(ids),
                                                        "allOrNone": "false"}).json()
    assert [r["success"] for r in gone] == [True, True]
    again = client.delete("/composite/sobjects",
                          params={"ids": f"{ids[0]},001000000000000AAA,bad"}).json()
    assert [codes(r) for r in again] == [["ENTITY_IS_DELETED"],
                                         ["INVALID_CROSS_REFERENCE_KEY"], ["MALFORMED_ID"]]
    assert emulator.records("Contact") == {}
    fresh = upsert(client, contact("a", LastName="A")).json()[0]
    assert fresh["created"] and fresh["id"] != ids[0]
    many = client.delete("/composite/sobjects", params={"ids": ",".join([ids[0]] * 201)})
    assert many.status_code == 400


def test_the_daily_allocation_refuses_with_request_limit_exceeded(serve: Serve) -> None:
    client, emulator = serve(daily_limit=3, day_seconds=60)
    assert [client.get("/limits").status_code for _ in range(3)] == [200, 200, 200]
    spent = upsert(client, contact("a", LastName="A"))
    assert spent.status_code == 403
    assert spent.json() == [{"message": "TotalRequests Limit exceeded.",
                             "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    stats = emulator.state()["stats"]
    assert stats["max_requests_in_window"] == 4  # every request the client sent counts
    assert stats["limit_exceeded"]["TotalRequests"] == 1
    emulator.restore_allowance()
    assert upsert(client, contact("a", LastName="A")).status_code == 200


def test_too_many_concurrent_requests_are_refused_for_a_while(serve: Serve) -> None:
    client, emulator = serve(concurrent_limit=1, faults=Faults(latency_ms=300))
    statuses: list[int] = []

    def call() -> None:
        statuses.append(client.get("/limits").status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 403]
    stats = emulator.state()["stats"]
    assert stats["max_concurrent"] == 2 and stats["limit_exceeded"]["ConcurrentRequests"] == 1


def test_injected_faults_look_like_salesforce(serve: Serve) -> None:
    client, emulator = serve()
    emulator.set_faults(rate_429=1.0)
    limited = client.get("/limits")
    assert limited.status_code == 403 and "Concurrent" in limited.json()[0]["message"]
    emulator.set_faults(rate_429=0, dead=True)
    dead = client.get("/limits")
    assert dead.status_code == 503 and dead.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    emulator.set_faults(dead=False, poison={"path": "LastName", "value": "Poison"})
    poisoned = upsert(client, contact("p", LastName="Poison")).json()[0]
    assert codes(poisoned) == ["FIELD_CUSTOM_VALIDATION_EXCEPTION"]


# -- Bulk API 2.0 -----------------------------------------------------------------------------


def open_job(client: httpx.Client, **spec: Any) -> str:
    body = {"object": "Contact", "operation": "upsert", "externalIdFieldName": "External_Id__c",
            "contentType": "CSV", "lineEnding": "LF", **spec}
    response = client.post("/jobs/ingest", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "Open"
    return response.json()["id"]


def run_job(client: httpx.Client, data: str, **spec: Any) -> tuple[str, dict[str, Any]]:
    jid = open_job(client, **spec)
    put = client.put(f"/jobs/ingest/{jid}/batches", content=data.encode(),
                     headers={"Content-Type": "text/csv"})
    assert put.status_code == 201
    assert client.patch(f"/jobs/ingest/{jid}", json={"state": "UploadComplete"}).status_code == 200
    assert client.get(f"/jobs/ingest/{jid}").json()["state"] == "InProgress"
    return jid, client.get(f"/jobs/ingest/{jid}").json()


def rows(client: httpx.Client, jid: str, kind: str) -> list[dict[str, str]]:
    response = client.get(f"/jobs/ingest/{jid}/{kind}/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_bulk_upsert_job_results_are_csv_in_no_promised_order(serve: Serve) -> None:
    client, emulator = serve()
    lines = ["External_Id__c,LastName,Email"] + [f"k{i},L{i},k{i}@x.io" for i in range(50)]
    lines += ["bad,B,not-an-email", "nolast,,n@x.io"]
    jid, info = run_job(client, "\n".join(lines) + "\n")
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (
        "JobComplete", 52, 2)
    done = rows(client, jid, "successfulResults")
    assert set(done[0]) == {"sf__Id", "sf__Created", "External_Id__c", "LastName", "Email"}
    assert [r["External_Id__c"] for r in done] != [f"k{i}" for i in range(50)]  # shuffled
    org = emulator.records("Contact")
    assert all(org[r["sf__Id"]]["External_Id__c"] == r["External_Id__c"] for r in done)
    failed = {r["External_Id__c"]: r["sf__Error"] for r in rows(client, jid, "failedResults")}
    assert failed == {
        "bad": "INVALID_EMAIL_ADDRESS:Email: invalid email address: not-an-email:Email --",
        "nolast": "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"}
    # #N/A clears a field; an empty value leaves it alone.
    _, cleared = run_job(client, "External_Id__c,LastName,Email\nk1,,#N/A\n")
    assert cleared["state"] == "JobComplete"
    record = next(r for r in emulator.records("Contact").values() if r["External_Id__c"] == "k1")
    assert (record["LastName"], record["Email"]) == ("L1", None)


def test_bulk_job_contract(serve: Serve) -> None:
    client, emulator = serve()
    jid = open_job(client)
    put = client.put(f"/jobs/ingest/{jid}/batches", content=b"External_Id__c,LastName\na,A\n",
                     headers={"Content-Type": "text/csv"})
    assert put.status_code == 201
    second = client.put(f"/jobs/ingest/{jid}/batches", content=b"External_Id__c\nb\n",
                        headers={"Content-Type": "text/csv"})
    assert second.status_code == 400 and "multiple contents" in second.json()[0]["message"]
    early = client.get(f"/jobs/ingest/{jid}/successfulResults/")
    assert early.status_code == 409
    aborted = client.patch(f"/jobs/ingest/{jid}", json={"state": "Aborted"}).json()
    assert aborted["state"] == "Aborted"
    assert [r["External_Id__c"] for r in rows(client, jid, "unprocessedrecords")] == ["a"]
    # CRLF data in an LF job fails the job; so does an upsert job without its key column.
    _, crlf = run_job(client, "External_Id__c,LastName\r\na,A\r\n")
    assert crlf["state"] == "Failed" and "LineEnding" in crlf["errorMessage"]
    _, keyless = run_job(client, "LastName\nA\n")
    assert keyless["state"] == "Failed"
    bad_key = client.post("/jobs/ingest", json={"object": "Contact", "operation": "upsert",
                                                "externalIdFieldName": "Email"})
    assert bad_key.status_code == 400
    assert client.post("/jobs/ingest", json={"object": "Nope", "operation": "upsert"}
                       ).status_code == 400
    assert emulator.records("Contact") == {}


def test_bulk_delete_and_the_daily_record_allowance(serve: Serve) -> None:
    client, emulator = serve(bulk_records_per_day=15_000, polls_to_complete=1)
    lines = ["External_Id__c,LastName"] + [f"k{i},L" for i in range(12_000)]
    jid = open_job(client)
    client.put(f"/jobs/ingest/{jid}/batches", content=("\n".join(lines) + "\n").encode(),
               headers={"Content-Type": "text/csv"})
    client.patch(f"/jobs/ingest/{jid}", json={"state": "UploadComplete"})
    assert client.get(f"/jobs/ingest/{jid}").json()["state"] == "JobComplete"
    ids = list(emulator.records("Contact"))[:3]
    jid = open_job(client, operation="delete", externalIdFieldName=None)
    client.put(f"/jobs/ingest/{jid}/batches",
               content=("Id\n" + "\n".join(ids) + "\n").encode(),
               headers={"Content-Type": "text/csv"})
    client.patch(f"/jobs/ingest/{jid}", json={"state": "UploadComplete"})
    assert client.get(f"/jobs/ingest/{jid}").json()["numberRecordsProcessed"] == 3
    assert len(emulator.records("Contact")) == 11_997
    # 12,003 of 15,000 used: the next job's first internal batch of 10,000 does not fit.
    jid = open_job(client)
    client.put(f"/jobs/ingest/{jid}/batches", content=("\n".join(lines) + "\n").encode(),
               headers={"Content-Type": "text/csv"})
    client.patch(f"/jobs/ingest/{jid}", json={"state": "UploadComplete"})
    info = client.get(f"/jobs/ingest/{jid}").json()
    assert info["state"] == "Failed" and "Daily limit" in info["errorMessage"]
    assert len(rows(client, jid, "unprocessedrecords")) == 12_000
