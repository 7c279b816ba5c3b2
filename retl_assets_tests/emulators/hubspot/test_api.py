"""The HubSpot emulator, driven over real HTTP the way a delivery client would drive it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer, Faults, HubSpotEmulator, build_hubspot_app

TOKEN = "pat-test-token"
CONTACTS = "/crm/v3/objects/contacts"
COMPANIES = "/crm/v3/objects/companies"
RATE_HEADERS = (
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Secondly",
    "X-HubSpot-RateLimit-Secondly-Remaining",
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
)

Serve = Callable[..., tuple[httpx.Client, HubSpotEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start an emulator on a free port; every server and client is closed after the test."""
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(
        token: str | None = TOKEN, **emulator_args: Any
    ) -> tuple[httpx.Client, HubSpotEmulator]:
        emulator_args.setdefault("tokens", {TOKEN})
        emulator = HubSpotEmulator(**emulator_args)
        server = EmulatorServer(build_hubspot_app(emulator)).start()
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        client = httpx.Client(base_url=server.url, headers=headers, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def contact(email: str, **properties: Any) -> dict[str, Any]:
    return {"id": email, "idProperty": "email", "properties": properties}


def upsert(client: httpx.Client, path: str, *inputs: dict[str, Any]) -> httpx.Response:
    return client.post(f"{path}/batch/upsert", json={"inputs": list(inputs)})


def details(message: str) -> list[dict[str, Any]]:
    """The per-property list HubSpot embeds as JSON text in an error message."""
    prefix = "Property values were not valid: "
    assert message.startswith(prefix)
    return json.loads(message[len(prefix):])


def test_auth_needs_a_bearer_token_and_never_echoes_it(serve: Serve) -> None:
    client, emulator = serve()
    url = str(client.base_url)
    body = {"inputs": [contact("a@x.io", firstname="Ann")]}

    missing = httpx.post(f"{url}{CONTACTS}/batch/upsert", json=body)
    wrong = httpx.post(
        f"{url}{CONTACTS}/batch/upsert", json=body, headers={"Authorization": "Bearer pat-wrong"}
    )
    basic = httpx.post(f"{url}{CONTACTS}/batch/upsert", json=body, auth=(TOKEN, ""))
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        answer = refused.json()
        assert answer["category"] == "INVALID_AUTHENTICATION"
        assert answer["status"] == "error" and answer["correlationId"]
        assert answer["message"].startswith("Authentication credentials not found.")
    assert "pat-wrong" not in wrong.text
    assert emulator.records("contacts") == {}

    assert client.post(f"{CONTACTS}/batch/upsert", json=body).status_code == 200
    anyone, _ = serve(token="whatever", tokens=None)  # None: any non-empty token
    assert anyone.get(CONTACTS).status_code == 200


def test_create_then_update_by_email_keeps_the_id(serve: Serve) -> None:
    client, emulator = serve()
    first = upsert(client, CONTACTS, contact("Ann@X.io", firstname="Ann", plan="free"))
    assert first.status_code == 200
    created = first.json()
    assert created["status"] == "COMPLETE" and created["startedAt"] and created["completedAt"]
    [result] = created["results"]
    assert result["new"] is True and result["archived"] is False and result["id"].isdigit()
    assert result["properties"]["email"] == "ann@x.io"  # the match value is set on the record
    assert result["properties"]["hs_object_id"] == result["id"]

    time.sleep(0.01)  # so updatedAt moves on
    second = upsert(client, CONTACTS, contact("ann@x.io", plan="pro"), contact("bo@x.io"))
    updated, other = second.json()["results"]
    assert (updated["id"], updated["new"]) == (result["id"], False)
    assert updated["createdAt"] == result["createdAt"] < updated["updatedAt"]
    assert other["new"] is True and other["id"] != result["id"]

    records = emulator.records("contacts")
    assert records[result["id"]]["properties"] == {
        "email": "ann@x.io",
        "firstname": "Ann",
        "plan": "pro",
    }
    assert len(records) == 2
    assert emulator.state()["stats"]["created"] == 2 and emulator.state()["stats"]["updated"] == 1


def test_domain_is_not_unique_unless_the_portal_is_set_up_so(serve: Serve) -> None:
    hubspot_default, _ = serve()
    company = {"id": "acme.com", "idProperty": "domain", "properties": {"name": "Acme"}}
    refused = upsert(hubspot_default, COMPANIES, company)
    assert refused.status_code == 400 and refused.json()["category"] == "VALIDATION_ERROR"
    assert refused.json()["message"] == ("Unable to perform update/upsert by non-unique 0-2 "
                                         "property domain")

    client, emulator = serve(unique_properties={"contacts": {"email"}, "companies": {"domain"}})
    first = upsert(client, COMPANIES, company).json()["results"][0]
    company["properties"] = {"industry": "Tools"}
    again = upsert(client, COMPANIES, company).json()["results"][0]

    assert again["id"] == first["id"] and again["new"] is False
    assert emulator.records("companies")[first["id"]]["properties"] == {
        "domain": "acme.com",
        "name": "Acme",
        "industry": "Tools",
    }


def test_a_bad_email_refuses_the_whole_batch(serve: Serve) -> None:
    client, emulator = serve()
    response = upsert(client, CONTACTS, contact("ok@x.io"), contact("not-an-email"))

    assert response.status_code == 400
    answer = response.json()
    assert set(answer) == {"status", "message", "correlationId", "category"}
    assert (answer["status"], answer["category"]) == ("error", "VALIDATION_ERROR")
    assert details(answer["message"]) == [
        {
            "isValid": False,
            "message": "Email address not-an-email is invalid",
            "error": "INVALID_EMAIL",
            "name": "email",
        }
    ]
    assert emulator.records("contacts") == {}  # the good input was not applied either


def test_multi_status_applies_the_good_inputs_and_answers_207(serve: Serve) -> None:
    client, emulator = serve(multi_status=True)
    response = upsert(client, CONTACTS, contact("ok@x.io"), contact("bad@"), contact("b@x.io"))

    assert response.status_code == 207
    answer = response.json()
    assert [r["properties"]["email"] for r in answer["results"]] == ["ok@x.io", "b@x.io"]
    assert answer["numErrors"] == 1
    [err] = answer["errors"]
    assert (err["status"], err["category"]) == ("error", "VALIDATION_ERROR")
    assert err["context"] == {"ids": ["bad@"]}
    assert details(err["message"])[0]["error"] == "INVALID_EMAIL"
    assert len(emulator.records("contacts")) == 2


def test_distinct_write_trace_ids_also_get_207(serve: Serve) -> None:
    client, _ = serve()
    good = {**contact("ok@x.io"), "objectWriteTraceId": "t1"}
    bad = {**contact("bad"), "objectWriteTraceId": "t2"}
    answer = upsert(client, CONTACTS, good, bad).json()

    assert answer["results"][0]["objectWriteTraceId"] == "t1"
    assert answer["errors"][0]["context"] == {"ids": ["bad"], "objectWriteTraceId": ["t2"]}


def test_unknown_properties_are_refused_when_properties_are_declared(serve: Serve) -> None:
    client, emulator = serve(properties={"contacts": {"firstname"}})
    assert upsert(client, CONTACTS, contact("a@x.io", firstname="A")).status_code == 200
    response = upsert(client, CONTACTS, contact("b@x.io", firstname="B", shoe_size=44))

    assert response.status_code == 400
    assert details(response.json()["message"]) == [
        {
            "isValid": False,
            "message": 'Property "shoe_size" does not exist',
            "error": "PROPERTY_DOESNT_EXIST",
            "name": "shoe_size",
        }
    ]
    assert len(emulator.records("contacts")) == 1


def test_batch_size_unique_key_and_duplicate_rules(serve: Serve) -> None:
    client, emulator = serve()
    hundred = [contact(f"u{i}@x.io") for i in range(100)]
    assert upsert(client, CONTACTS, *hundred).status_code == 200

    too_many = upsert(client, CONTACTS, *hundred, contact("u100@x.io"))
    assert too_many.status_code == 400
    assert too_many.json()["category"] == "VALIDATION_ERROR"

    by_name = {"id": "Ann", "idProperty": "firstname", "properties": {}}
    not_unique = upsert(client, CONTACTS, by_name)
    assert not_unique.status_code == 400
    assert "non-unique 0-1 property" in not_unique.json()["message"]

    twice = upsert(client, CONTACTS, contact("d@x.io"), contact("D@x.io"))
    assert twice.status_code == 400 and "Duplicate IDs" in twice.json()["message"]

    domain_only, _ = serve(unique_properties={"contacts": {"email"}, "companies": set()})
    company = {"id": "acme.com", "idProperty": "domain", "properties": {}}
    assert upsert(domain_only, COMPANIES, company).status_code == 400

    assert len(emulator.records("contacts")) == 100
    assert len(emulator.state()["stats"]["contract_violations"]) == 3


def test_archive_keeps_the_record_and_a_later_upsert_creates_a_new_one(serve: Serve) -> None:
    client, emulator = serve()
    old = upsert(client, CONTACTS, contact("a@x.io", plan="pro")).json()["results"][0]["id"]

    archived = client.post(
        f"{CONTACTS}/batch/archive", json={"inputs": [{"id": old}, {"id": "999999"}]}
    )
    assert (archived.status_code, archived.content) == (204, b"")
    assert client.post(f"{CONTACTS}/batch/archive", json={"inputs": [{"id": old}]}).status_code == 204

    again = upsert(client, CONTACTS, contact("a@x.io")).json()["results"][0]
    assert again["new"] is True and again["id"] != old
    assert list(emulator.records("contacts")) == [again["id"]]
    everything = emulator.state()["objects"]["contacts"]
    assert everything[old]["archived"] is True and everything[old]["properties"]["plan"] == "pro"
    assert client.get(f"{CONTACTS}/{old}").status_code == 404
    assert client.get(f"{CONTACTS}/{old}", params={"archived": "true"}).json()["archived"]


def test_associations_single_and_batch(serve: Serve) -> None:
    client, emulator = serve()
    ann, bo = (r["id"] for r in upsert(client, CONTACTS, contact("a@x.io"), contact("b@x.io"))
               .json()["results"])  # fmt: skip
    acme = client.post(f"{COMPANIES}/batch/create",
                       json={"inputs": [{"properties": {"domain": "acme.com"}}]})
    acme_id = acme.json()["results"][0]["id"]

    single = client.put(f"/crm/v4/objects/contacts/{ann}/associations/default/companies/{acme_id}")
    assert single.status_code == 200
    assert single.json()["results"][0]["associationSpec"] == {
        "associationCategory": "HUBSPOT_DEFINED",
        "associationTypeId": 279,
    }
    batch = client.post(
        "/crm/v4/associations/contacts/companies/batch/associate/default",
        json={"inputs": [
            {"from": {"id": bo}, "to": {"id": acme_id}},
            {"from": {"id": "424242"}, "to": {"id": acme_id}},
        ]},
    )  # fmt: skip
    assert batch.status_code == 200
    answer = batch.json()
    # Each pair comes back in both directions, each with its own type id.
    assert [(r["from"]["id"], r["associationSpec"]["associationTypeId"])
            for r in answer["results"]] == [(bo, 279), (acme_id, 280)]
    assert answer["numErrors"] == 1 and answer["errors"][0]["context"]["fromId"] == ["424242"]

    unknown = client.put(f"/crm/v4/objects/contacts/424242/associations/default/companies/{acme_id}")
    assert unknown.status_code == 400
    assert emulator.state()["associations"] == [
        {"fromObject": "contacts", "fromId": c, "toObject": "companies", "toId": acme_id,
         "associationTypeId": 279}
        for c in sorted([ann, bo])
    ]  # fmt: skip


def test_a_property_definition_says_whether_its_values_are_unique(serve: Serve) -> None:
    client, _ = serve()
    email = client.get("/crm/v3/properties/contacts/email")
    assert email.status_code == 200
    assert {k: email.json()[k] for k in ("name", "label", "type", "fieldType", "groupName",
                                         "hasUniqueValue", "hubspotDefined")} == {
        "name": "email", "label": "Email", "type": "string", "fieldType": "text",
        "groupName": "contactinformation", "hasUniqueValue": True, "hubspotDefined": True}
    domain = client.get("/crm/v3/properties/company/domain").json()  # singular names too
    assert (domain["name"], domain["hasUniqueValue"], domain["groupName"]) == (
        "domain", False, "companyinformation")
    # Without declared properties, any name is a property of the portal's own.
    own = client.get("/crm/v3/properties/companies/acme_id").json()
    assert (own["hasUniqueValue"], own["hubspotDefined"], own["label"]) == (False, False, "acme_id")
    assert client.get("/crm/v3/properties/widgets/name").status_code == 400  # no such object

    custom, _ = serve(unique_properties={"contacts": {"email"}, "companies": {"acme_id"}},
                      properties={"companies": {"domain", "name"}})
    assert custom.get("/crm/v3/properties/companies/acme_id").json()["hasUniqueValue"] is True
    assert custom.get("/crm/v3/properties/companies/domain").json()["hasUniqueValue"] is False
    missing = custom.get("/crm/v3/properties/companies/nope")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"
    anonymous, _ = serve(token=None)
    assert anonymous.get("/crm/v3/properties/contacts/email").status_code == 401


def test_batch_read_by_unique_property_names_what_it_did_not_find(serve: Serve) -> None:
    client, _ = serve(unique_properties={"contacts": {"email"}, "companies": {"domain"}})
    acme = upsert(client, COMPANIES, {"id": "acme.com", "idProperty": "domain", "properties": {}})
    acme_id = acme.json()["results"][0]["id"]
    read = client.post(f"{COMPANIES}/batch/read", json={
        "idProperty": "domain", "properties": ["domain"],
        "inputs": [{"id": "ACME.com"}, {"id": "nowhere.io"}]})
    assert read.status_code == 207
    body = read.json()
    assert [(r["id"], r["properties"]["domain"]) for r in body["results"]] == [(acme_id, "acme.com")]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"]["ids"] == ["nowhere.io"]
    found = client.post(f"{COMPANIES}/batch/read", json={"inputs": [{"id": acme_id}]})
    assert found.status_code == 200 and found.json()["results"][0]["id"] == acme_id
    too_many = client.post(f"{COMPANIES}/batch/read",
                           json={"inputs": [{"id": str(i)} for i in range(101)]})
    assert too_many.status_code == 400


def test_batch_update_by_id_changes_the_unique_value_and_never_creates(serve: Serve) -> None:
    client, emulator = serve()
    ann = upsert(client, CONTACTS, contact("a@x.io", firstname="Ann")).json()["results"][0]["id"]
    update = client.post(f"{CONTACTS}/batch/update", json={"inputs": [
        {"id": ann, "properties": {"email": "ann@new.io", "firstname": "Anna"}},
        {"id": "424242", "properties": {"firstname": "Ghost"}}]})
    assert update.status_code == 207
    body = update.json()
    assert [r["id"] for r in body["results"]] == [ann]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"]["ids"] == ["424242"]
    records = emulator.records("contacts")
    assert list(records) == [ann]
    assert records[ann]["properties"]["email"] == "ann@new.io"
    # The new address now finds the same record; the old one finds nothing.
    assert client.get(f"{CONTACTS}/ann@new.io", params={"idProperty": "email"}).json()["id"] == ann
    assert client.get(f"{CONTACTS}/a@x.io", params={"idProperty": "email"}).status_code == 404
    by_object_id = client.post(f"{CONTACTS}/batch/update", json={"inputs": [
        {"id": ann, "idProperty": "hs_object_id", "properties": {}}]})
    assert by_object_id.status_code == 400


def test_ten_second_window_answers_the_documented_429(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(5, 1.0))
    first = client.get(CONTACTS, params={"limit": 1})
    assert first.status_code == 200
    assert first.headers["X-HubSpot-RateLimit-Max"] == "5"
    assert first.headers["X-HubSpot-RateLimit-Remaining"] == "4"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "1000"

    codes = [client.get(CONTACTS).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    limited = client.get(CONTACTS)
    assert limited.status_code == 429
    answer = limited.json()
    assert set(answer) == {
        "status", "message", "errorType", "correlationId", "policyName", "requestId"
    }  # fmt: skip
    assert answer["message"] == "You have reached your ten_secondly_rolling limit."
    assert (answer["errorType"], answer["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert all(name in limited.headers for name in RATE_HEADERS)
    assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert "Retry-After" not in limited.headers  # HubSpot documents none

    stats = emulator.state()["stats"]
    assert stats["max_requests_in_window"] == 7  # refused ones count: the client sent them
    assert stats["rate_limited"]["TEN_SECONDLY_ROLLING"] == 2

    time.sleep(1.05)  # the next window
    assert client.get(CONTACTS).status_code == 200


def test_a_paced_client_stays_under_the_window(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(4, 0.5), send_retry_after=True)
    for _ in range(3):
        assert [client.get(CONTACTS).status_code for _ in range(4)] == [200] * 4
        time.sleep(0.55)
    assert emulator.state()["stats"]["max_requests_in_window"] == 4

    [client.get(CONTACTS) for _ in range(4)]
    limited = client.get(CONTACTS)
    assert limited.status_code == 429 and 0 < float(limited.headers["Retry-After"]) <= 0.5


def test_daily_limit(serve: Serve) -> None:
    client, emulator = serve(daily_limit=3)
    responses = [client.get(CONTACTS) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[2].headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    answer = responses[3].json()
    assert (answer["policyName"], answer["message"]) == ("DAILY", "You have reached your daily limit.")
    assert emulator.state()["stats"]["daily_requests"] == 3

    emulator.reset()  # a new day, as far as the emulator is concerned
    assert client.get(CONTACTS).status_code == 200


def test_faults(serve: Serve) -> None:
    client, emulator = serve(faults=Faults(error_rate=1.0), seed=3)
    codes = {upsert(client, CONTACTS, contact("a@x.io")).status_code for _ in range(12)}
    assert codes == {500, 502}
    assert emulator.records("contacts") == {}

    emulator.set_faults(error_rate=0, rate_429=1.0)
    injected = client.get(CONTACTS)
    assert injected.status_code == 429 and injected.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert "Retry-After" not in injected.headers

    emulator.set_faults(rate_429=0, dead=True)
    assert client.get(CONTACTS).status_code == 503

    emulator.set_faults(dead=False, latency_ms=150)
    started = time.monotonic()
    assert client.get(CONTACTS).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_poison_refuses_the_batch_or_one_input(serve: Serve) -> None:
    poison = Faults(poison={"path": "properties.plan", "value": "boom"})
    client, emulator = serve(faults=poison)
    refused = upsert(client, CONTACTS, contact("a@x.io"), contact("b@x.io", plan="boom"))
    assert refused.status_code == 400 and emulator.records("contacts") == {}

    partial, emulator = serve(faults=poison, multi_status=True)
    answer = upsert(partial, CONTACTS, contact("a@x.io"), contact("b@x.io", plan="boom"))
    assert answer.status_code == 207 and answer.json()["errors"][0]["context"]["ids"] == ["b@x.io"]
    assert len(emulator.records("contacts")) == 1


def test_reads_list_page_and_get_by_id_or_email(serve: Serve) -> None:
    client, _ = serve()
    ids = [r["id"] for r in upsert(client, CONTACTS, *[contact(f"u{i}@x.io") for i in range(3)])
           .json()["results"]]  # fmt: skip

    page = client.get(CONTACTS, params={"limit": 2}).json()
    assert [r["id"] for r in page["results"]] == ids[:2]
    after = page["paging"]["next"]["after"]
    rest = client.get(CONTACTS, params={"limit": 2, "after": after}).json()
    assert [r["id"] for r in rest["results"]] == ids[2:] and "paging" not in rest

    one = client.get(f"{CONTACTS}/{ids[1]}").json()
    assert one["properties"]["email"] == "u1@x.io" and one["archived"] is False
    by_email = client.get(f"{CONTACTS}/U1@x.io", params={"idProperty": "email"}).json()
    assert by_email["id"] == ids[1]

    missing = client.get(f"{CONTACTS}/31337")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"
    assert client.get("/crm/v3/objects/widgets").status_code == 400


def test_admin_routes_state_faults_reset(serve: Serve) -> None:
    client, emulator = serve()
    admin = httpx.Client(base_url=client.base_url)  # admin routes need no token
    try:
        upsert(client, CONTACTS, contact("a@x.io"))
        state = admin.get("/_emulator/state").json()
        assert list(state) == ["objects", "associations", "stats"]
        assert set(state["objects"]) == {"contacts", "companies"}
        assert state["stats"]["requests"] == 1 and state["stats"]["status"] == {"200": 1}

        faults = admin.post("/_emulator/faults", json={"latency_ms": 5})
        assert faults.json()["latency_ms"] == 5 and faults.json()["error_rate"] == 0
        assert admin.post("/_emulator/faults", json={"nope": 1}).status_code == 400

        assert admin.post("/_emulator/reset").json() == {"ok": True}
        state = admin.get("/_emulator/state").json()
        assert state["objects"]["contacts"] == {} and state["stats"]["requests"] == 0
        assert emulator.faults.latency_ms == 5  # reset keeps the faults
        assert admin.get("/healthz").json() == {"ok": True}
    finally:
        admin.close()
