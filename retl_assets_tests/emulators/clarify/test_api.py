"""The Clarify emulator, driven over real HTTP the way our client drives it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.clarify import ClarifyEmulator, build_clarify_app

KEY = "clarify-test-key"
ROOT = "/v1/workspaces/acme"
PEOPLE = f"{ROOT}/objects/person/records"
COMPANIES = f"{ROOT}/objects/company/records"
Serve = Callable[..., tuple[httpx.Client, ClarifyEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(key: str = KEY, **args: Any) -> tuple[httpx.Client, ClarifyEmulator]:
        args.setdefault("keys", {KEY})
        args.setdefault("rate_limit", (100, 1.0))  # tests of the pace set their own
        emulator = ClarifyEmulator(**args)
        server = EmulatorServer(build_clarify_app(emulator)).start()
        client = httpx.Client(base_url=server.url, timeout=5,
                              headers={"Authorization": f"api-key {key}"})
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def person(*emails: str, **attributes: Any) -> dict[str, Any]:
    return {"type": "person", "attributes": {"email_addresses": {"items": list(emails)},
                                             **attributes}}


def company(*domains: str, **attributes: Any) -> dict[str, Any]:
    return {"type": "company", "attributes": {"domains": {"items": list(domains)}, **attributes}}


def bulk(client: httpx.Client, path: str, *records: dict[str, Any]) -> httpx.Response:
    return client.post(f"{path}/bulk", json={"data": list(records)})


def test_auth_is_an_api_key_scheme_not_bearer(serve: Serve) -> None:
    client, emulator = serve()
    url = str(client.base_url)
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": "api-key nope"}):
        answer = httpx.get(f"{url}{ROOT}/schemas", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["errors"][0]["title"] == "Unauthorized"
        assert "nope" not in answer.text
    assert client.get(f"{ROOT}/schemas").status_code == 200
    assert client.get("/v1/workspaces/other/schemas").status_code == 404


def test_people_match_on_any_one_of_their_email_addresses(serve: Serve) -> None:
    client, emulator = serve()
    first = bulk(client, PEOPLE, person("ann@x.io", "ann@home.io", name={"first_name": "Ann"}))
    assert first.status_code == 200
    [created] = first.json()["data"]
    assert created["type"] == "person" and created["id"]

    second = bulk(client, PEOPLE, person("ANN@home.io", plan="pro"), person("bo@x.io"))
    updated, other = second.json()["data"]
    assert updated["id"] == created["id"] and other["id"] != created["id"]
    assert updated["attributes"]["email_addresses"]["items"] == ["ann@x.io", "ann@home.io"]
    assert updated["attributes"]["name"] == {"first_name": "Ann"}
    assert updated["attributes"]["plan"] == "pro"
    assert len(emulator.records("person")) == 2
    stats = emulator.state()["stats"]
    assert (stats["created"], stats["updated"]) == (2, 1)


def test_companies_match_on_any_one_of_their_domains(serve: Serve) -> None:
    client, emulator = serve()
    [a] = bulk(client, COMPANIES, company("acme.com", "acme.io")).json()["data"]
    [b] = bulk(client, COMPANIES, company("acme.io", industry="tools")).json()["data"]
    assert a["id"] == b["id"] and b["attributes"]["industry"] == "tools"
    assert bulk(client, COMPANIES, company("not a domain")).status_code == 422
    with_id = bulk(client, COMPANIES, {**company("acme.com"), "id": a["id"]})
    assert with_id.status_code == 422  # an id in a POST body


def test_an_invalid_record_refuses_the_whole_bulk_naming_it(serve: Serve) -> None:
    client, emulator = serve()
    answer = bulk(client, PEOPLE, person("ok@x.io"), person("not-an-email"),
                  person("c@x.io", name="Cy"), {"type": "company", "attributes": {}})
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert [(e["status"], e["title"]) for e in errors] == [(422, "Validation Error")] * 3
    pointers = [e["source"]["pointer"] for e in errors]
    assert pointers == ["/data/1/attributes/email_addresses/items/0",
                        "/data/2/attributes/name", "/data/3/type"]
    assert "'not-an-email' is not a valid email address" in errors[0]["detail"]
    assert emulator.records("person") == {}  # nothing applied
    assert bulk(client, PEOPLE, {"type": "person", "attributes": {"plan": "x"}}).status_code == 422
    assert client.post(f"{PEOPLE}/bulk", json={"data": {}}).status_code == 400


def test_a_record_matching_two_people_is_a_duplicate(serve: Serve) -> None:
    client, emulator = serve()
    bulk(client, PEOPLE, person("a@x.io"), person("b@x.io"))
    answer = bulk(client, PEOPLE, person("a@x.io", "b@x.io"))
    assert answer.status_code == 400  # Clarify: a duplicate (email collision) is a 400
    assert "match more than one person" in answer.json()["errors"][0]["detail"]


def test_bulk_takes_at_most_25_records_and_known_attributes(serve: Serve) -> None:
    client, emulator = serve(attributes={"person": {"name", "plan"}})
    too_many = bulk(client, PEOPLE, *[person(f"p{i}@x.io") for i in range(26)])
    assert too_many.status_code == 422
    assert "more than 25" in too_many.json()["errors"][0]["detail"]
    assert emulator.records("person") == {}
    assert bulk(client, PEOPLE, *[person(f"p{i}@x.io") for i in range(25)]).status_code == 200
    unknown = bulk(client, PEOPLE, person("a@x.io", shoe_size=42))
    assert unknown.status_code == 422
    assert "no attribute 'shoe_size'" in unknown.json()["errors"][0]["detail"]
    assert bulk(client, PEOPLE, person("a@x.io", plan="pro")).status_code == 200


def test_delete_one_by_id_reads_and_pages(serve: Serve) -> None:
    client, emulator = serve()
    ids = [r["id"] for r in bulk(client, PEOPLE, *[person(f"p{i}@x.io") for i in range(5)])
           .json()["data"]]
    assert client.get(f"{PEOPLE}/{ids[0]}").json()["data"]["id"] == ids[0]
    assert client.delete(f"{PEOPLE}/{ids[0]}").status_code == 204
    assert client.delete(f"{PEOPLE}/{ids[0]}").status_code == 404
    assert client.get(f"{PEOPLE}/{ids[0]}").status_code == 404
    # The deleted person's address is free again: an upsert creates a new person.
    [again] = bulk(client, PEOPLE, person("p0@x.io")).json()["data"]
    assert again["id"] not in ids

    page = client.get(f"{ROOT}/objects/person/resources", params={"page[limit]": 2}).json()
    assert len(page["data"]) == 2 and page["meta"]["total_records"] == 5
    assert page["meta"]["total_pages"] == 3 and "next" in page["links"]
    assert client.get(f"{ROOT}/objects/person/resources",
                      params={"page[limit]": 1001}).status_code == 400
    assert client.get(f"{ROOT}/objects/widget/resources").status_code == 404


def test_one_bulk_a_second_else_429_without_retry_after(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(1, 1.0))  # Clarify's pace (the default)
    statuses = [bulk(client, PEOPLE, person(f"p{i}@x.io")).status_code for i in range(3)]
    assert statuses == [200, 429, 429]
    limited = bulk(client, PEOPLE, person("late@x.io"))
    assert limited.status_code == 429
    assert "Retry-After" not in limited.headers  # Clarify mentions none: back off
    assert limited.json()["errors"][0]["status"] == 429
    assert len(emulator.records("person")) == 1
    # Reads and deletes are paced apart from bulk writes.
    assert client.get(f"{ROOT}/schemas").status_code == 200
    stats = emulator.state()["stats"]
    assert stats["max_requests_in_window"] == 4 and stats["rate_limited"] == 3
    assert stats["max_reads_in_window"] == 1


def test_reads_are_limited_to_100_a_minute(serve: Serve) -> None:
    client, emulator = serve()
    statuses = [client.get(f"{ROOT}/schemas").status_code for _ in range(101)]
    assert statuses == [200] * 100 + [429]
    assert emulator.state()["stats"]["max_reads_in_window"] == 101


def test_faults(serve: Serve) -> None:
    client, emulator = serve()
    emulator.set_faults(dead=True)
    assert client.get(f"{ROOT}/schemas").status_code == 503
    emulator.set_faults(dead=False, error_rate=1.0)
    assert client.get(f"{ROOT}/schemas").status_code == 500
    emulator.set_faults(error_rate=0.0, poison={"path": "attributes.plan", "value": "bad"})
    answer = bulk(client, PEOPLE, person("a@x.io", plan="bad"))
    assert answer.status_code == 422
