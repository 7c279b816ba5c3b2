"""Salesforce's most used Python client (`simple-salesforce` 1.12) against the emulator.

Every call retl's writers make goes through the library: sObject Collections upsert and
delete (`restful`), the Bulk API 2.0 ingest job (create, upload, close, poll, successful,
failed and unprocessed results, abort), `limits`, and the version list. simple-salesforce
builds `https://` URLs from the instance name; the emulator serves plain HTTP on loopback,
so the library's session carries an adapter that sends the same request over `http://` to
that one address (and refuses any other).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from retl_assets.destinations.salesforce.config import API_VERSION
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.salesforce import SalesforceEmulator, build_salesforce_app

pytestmark = pytest.mark.timeout(60)

TOKEN = "00Dconformance!session"
VERSION = "68.0"
WAIT = 0.05  # seconds the library sleeps before and between bulk job polls


class LoopbackHTTP(HTTPAdapter):
    """Sends the library's https:// request to the emulator as http://, unchanged else."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        request.url = "http://" + str(request.url).removeprefix("https://")
        return super().send(request, **kwargs)


class Nowhere(BaseAdapter):
    """Any address but the emulator's: refused, so nothing leaves the machine."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise AssertionError(f"the test reached for {request.url}")

    def close(self) -> None:
        pass


def connect(url: str, token: str = TOKEN, version: str = VERSION) -> Salesforce:
    host = url.removeprefix("http://")
    session = requests.Session()
    session.mount("https://", Nowhere())
    session.mount("http://", Nowhere())
    session.mount(f"https://{host}/", LoopbackHTTP(max_retries=0))
    return Salesforce(instance_url=url, session_id=token, version=version, session=session)


@pytest.fixture
def org() -> Iterator[tuple[SalesforceEmulator, Salesforce]]:
    emulator = SalesforceEmulator({TOKEN})
    with EmulatorServer(build_salesforce_app(emulator)).start() as server:
        yield emulator, connect(server.url)


def collection(sf: Salesforce, sobject: str, *records: dict[str, Any],
               id_field: str = "External_Id__c", all_or_none: bool = False) -> list[dict]:
    body = {"allOrNone": all_or_none,
            "records": [{"attributes": {"type": sobject}, **r} for r in records]}
    return sf.restful(f"composite/sobjects/{sobject}/{id_field}", method="PATCH", json=body,
                      timeout=5)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_the_current_version_is_served_and_retl_asks_for_it(org) -> None:
    _, sf = org
    listed = sf.session.get(f"https://{sf.sf_instance}/services/data/", timeout=5).json()
    versions = [v["version"] for v in listed]
    assert versions[-1] == VERSION and API_VERSION == VERSION
    assert {"label": "Winter '27", "url": "/services/data/v68.0", "version": "68.0"} in listed
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in listed
    assert float(versions[0]) >= 31.0  # 21.0 to 30.0 are retired
    with pytest.raises(SalesforceResourceNotFound):
        connect(f"http://{sf.sf_instance}", version="69.0").limits(timeout=5)


def test_limits_parse_and_every_answer_reports_api_usage(org) -> None:
    emulator, sf = org
    limits = sf.limits(timeout=5)
    assert limits["DailyApiRequests"]["Max"] == emulator.daily_limit
    assert limits["DailyApiRequests"]["Remaining"] == emulator.daily_limit - 1
    assert limits["DailyBulkApiBatches"] == {"Max": 15000, "Remaining": 15000}
    assert sf.api_usage["api-usage"].used == 1
    assert sf.api_usage["api-usage"].total == emulator.daily_limit


def test_a_wrong_session_and_a_spent_allowance_raise_the_libraries_errors() -> None:
    emulator = SalesforceEmulator({TOKEN}, daily_limit=2)
    with EmulatorServer(build_salesforce_app(emulator)).start() as server:
        with pytest.raises(SalesforceExpiredSession) as expired:
            connect(server.url, token="00Dwrong").limits(timeout=5)
        sf = connect(server.url)
        sf.limits(timeout=5)
        sf.limits(timeout=5)
        with pytest.raises(SalesforceRefusedRequest) as spent:
            sf.limits(timeout=5)
    assert expired.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    assert spent.value.content == [{"message": "TotalRequests Limit exceeded.",
                                    "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_collections_upsert_creates_updates_and_answers_in_request_order(org) -> None:
    emulator, sf = org
    first = collection(sf, "Contact", {"External_Id__c": "c1", "LastName": "One"},
                       {"External_Id__c": "c2", "LastName": "Two", "Email": "nope"},
                       {"External_Id__c": "c3", "LastName": "Three"})
    assert [(r["success"], r["created"]) for r in first] == [
        (True, True), (False, False), (True, True)]
    assert first[1]["errors"] == [{"statusCode": "INVALID_EMAIL_ADDRESS",
                                   "message": "Email: invalid email address: nope",
                                   "fields": ["Email"]}]
    again = collection(sf, "Contact", {"External_Id__c": "C1", "LastName": "Uno"})
    assert (again[0]["id"], again[0]["created"]) == (first[0]["id"], False)
    assert {r["External_Id__c"]: r["LastName"] for r in emulator.records("Contact").values()} \
        == {"C1": "Uno", "c3": "Three"}  # matched case-insensitively, stored as sent


def test_a_reference_to_a_missing_parent_fails_that_record_only(org) -> None:
    emulator, sf = org
    [acme] = collection(sf, "Account", {"External_Id__c": "acme", "Name": "Acme"})
    answer = collection(
        sf, "Contact",
        {"External_Id__c": "c1", "LastName": "One", "Account": {"External_Id__c": "ACME"}},
        {"External_Id__c": "c2", "LastName": "Two", "Account": {"External_Id__c": "nope"}},
        {"External_Id__c": "c3", "LastName": "Three",
         "Account": {"External_Id__c": "acme", "Name": "Acme"}})
    assert [r["success"] for r in answer] == [True, False, False]
    assert answer[1]["errors"] == [{
        "statusCode": "INVALID_FIELD", "fields": [],
        "message": "Foreign key external ID: nope not found for field External_Id__c in "
                   "entity Account"}]
    assert answer[2]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert "More than 1 field provided in an external foreign key reference" in \
        answer[2]["errors"][0]["message"]
    # The reference becomes the lookup field, holding the parent's id; nothing flat is kept.
    assert list(emulator.records("Contact").values()) == [
        {"External_Id__c": "c1", "LastName": "One", "AccountId": acme["id"]}]


def test_all_or_none_rolls_back_a_batch_with_a_missing_parent(org) -> None:
    emulator, sf = org
    answer = collection(
        sf, "Contact", {"External_Id__c": "c1", "LastName": "One"},
        {"External_Id__c": "c2", "LastName": "Two", "Account": {"External_Id__c": "nope"}},
        all_or_none=True)
    assert [r["errors"][0]["statusCode"] for r in answer] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "INVALID_FIELD"]
    assert emulator.records("Contact") == {}


def test_collections_delete_by_id_and_again(org) -> None:
    emulator, sf = org
    ids = [r["id"] for r in collection(sf, "Contact", {"External_Id__c": "c1", "LastName": "A"},
                                       {"External_Id__c": "c2", "LastName": "B"})]
    params = {"ids": ",".join(ids), "allOrNone": "false"}
    gone = sf.restful("composite/sobjects", method="DELETE", params=params, timeout=5)
    assert [(r["id"], r["success"]) for r in gone] == [(i, True) for i in ids]
    again = sf.restful("composite/sobjects", method="DELETE", params=params, timeout=5)
    assert [r["errors"][0]["statusCode"] for r in again] == ["ENTITY_IS_DELETED"] * 2
    assert emulator.records("Contact") == {}


def test_bulk_upsert_job_end_to_end_with_every_result_set(org) -> None:
    emulator, sf = org
    [acme] = collection(sf, "Account", {"External_Id__c": "acme", "Name": "Acme"})
    records = [
        {"External_Id__c": "b1", "LastName": "One", "Email": "one@x.io",
         "Account.External_Id__c": "acme"},
        {"External_Id__c": "b2", "LastName": "Two", "Email": "bad",
         "Account.External_Id__c": "acme"},
        {"External_Id__c": "b3", "LastName": "Three", "Email": "three@x.io",
         "Account.External_Id__c": "nope"},
    ]
    [summary] = sf.bulk2.Contact.upsert(records=records, external_id_field="External_Id__c",
                                        wait=WAIT)
    assert (summary["numberRecordsProcessed"], summary["numberRecordsFailed"],
            summary["numberRecordsTotal"]) == (3, 2, 3)
    job = summary["job_id"]
    done = rows(sf.bulk2.Contact.get_successful_records(job))
    failed = rows(sf.bulk2.Contact.get_failed_records(job))
    assert [(r["External_Id__c"], r["sf__Created"]) for r in done] == [("b1", "true")]
    errors = {r["External_Id__c"]: r["sf__Error"] for r in failed}
    assert errors["b2"].startswith("INVALID_EMAIL_ADDRESS:")
    assert errors["b3"].startswith("INVALID_FIELD:Foreign key external ID: nope not found for "
                                   "field External_Id__c in entity Account")
    assert rows(sf.bulk2.Contact.get_unprocessed_records(job)) == []
    everything = sf.bulk2.Contact.get_all_ingest_records(job)
    assert [len(everything[k]) for k in ("successfulRecords", "failedRecords",
                                         "unprocessedRecords")] == [1, 2, 0]
    [contact] = emulator.records("Contact").values()
    assert contact["AccountId"] == acme["id"] and "Account.External_Id__c" not in contact
    assert emulator.jobs[job].info()["state"] == "JobComplete"


def test_a_failed_job_raises_and_serves_unprocessed_records_in_both_spellings(org) -> None:
    emulator, sf = org
    with pytest.raises(SalesforceOperationError, match="Field name not provided"):
        sf.bulk2.Contact.upsert(records=[{"LastName": "One"}, {"LastName": "Two"}],
                                external_id_field="External_Id__c", wait=WAIT)
    [job] = emulator.jobs
    assert emulator.jobs[job].state == "Failed"
    unprocessed = rows(sf.bulk2.Contact.get_unprocessed_records(job))  # unprocessedRecords
    assert sorted(r["LastName"] for r in unprocessed) == ["One", "Two"]
    documented = sf.session.get(f"{sf.bulk2_url}ingest/{job}/unprocessedrecords/",
                                headers=sf.headers, timeout=5)
    assert documented.status_code == 200 and rows(documented.text) == unprocessed


def test_an_aborted_job_keeps_its_records_unprocessed(org) -> None:
    emulator, sf = org
    client = sf.bulk2.Contact._client  # the library's own job calls, one by one
    job = client.create_job("upsert", external_id_field="External_Id__c")
    assert (job["state"], job["object"], job["contentType"]) == ("Open", "Contact", "CSV")
    client.upload_job_data(job["id"], "External_Id__c,LastName\na1,A\na2,B\n")
    aborted = client.abort_job(job["id"], False)
    assert aborted["state"] == "Aborted"
    assert client.get_job(job["id"], False)["state"] == "Aborted"
    assert [r["External_Id__c"] for r in rows(
        sf.bulk2.Contact.get_unprocessed_records(job["id"]))] == ["a1", "a2"]
    assert emulator.records("Contact") == {}


def test_bulk_delete_by_id(org) -> None:
    emulator, sf = org
    ids = [r["id"] for r in collection(sf, "Contact", {"External_Id__c": "c1", "LastName": "A"},
                                       {"External_Id__c": "c2", "LastName": "B"})]
    [summary] = sf.bulk2.Contact.delete(records=[{"Id": i} for i in ids], wait=WAIT)
    assert (summary["numberRecordsProcessed"], summary["numberRecordsFailed"]) == (2, 0)
    assert sorted(r["sf__Id"] for r in rows(
        sf.bulk2.Contact.get_successful_records(summary["job_id"]))) == sorted(ids)
    assert emulator.records("Contact") == {}
