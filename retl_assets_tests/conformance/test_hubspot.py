"""HubSpot's own client (`hubspot-api-client` 12) against the HubSpot emulator.

Every call retl's writer makes goes through the library: batch upsert, update, read and
archive, v4 default associations, the credential check (a page of contacts), a property's
definition (whether its values are unique), and the calls a company writer needs because
HubSpot refuses `domain` as an idProperty: search and batch create. The client runs with
`client_side_validation=True`, so every answer is parsed into the models generated from
HubSpot's OpenAPI spec and refused when a required field is missing or an enum value is
wrong: an answer the emulator shapes wrongly fails here.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator

import pytest
from hubspot import Client
from hubspot.crm import associations, companies, contacts, properties
from hubspot.crm.associations.v4 import (
    BatchInputPublicDefaultAssociationMultiPost,
    PublicDefaultAssociationMultiPost,
)
from hubspot.crm.associations.v4 import PublicObjectId as AssociationId
from hubspot.crm.companies import (
    BatchInputSimplePublicObjectBatchInputForCreate,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
)
from urllib3.util.retry import Retry

from retl_assets.emulators import EmulatorServer, HubSpotEmulator, build_hubspot_app

pytestmark = pytest.mark.timeout(60)

TOKEN = "pat-conformance"
TIMEOUT = 5  # seconds, each call


@pytest.fixture
def portal() -> Iterator[tuple[HubSpotEmulator, Client]]:
    """An emulated portal as HubSpot ships it, and the official client pointed at it."""
    emulator = HubSpotEmulator({TOKEN})
    with EmulatorServer(build_hubspot_app(emulator)).start() as server:
        yield emulator, connect(server.url)


def connect(url: str) -> Client:
    # No retries: each answer is the emulator's own. Strict models: see the docstring.
    return Client.create(access_token=TOKEN, host=url, retry=Retry(total=0),
                         client_side_validation=True)


def upsert_contacts(client: Client, *emails: str, **properties: str):
    return client.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            SimplePublicObjectBatchInputUpsert(id=e, id_property="email", properties=properties)
            for e in emails]),
        _request_timeout=TIMEOUT)


def create_companies(client: Client, *domains: str):
    return client.crm.companies.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
            SimplePublicObjectInputForCreate(properties={"domain": d, "name": d.split(".")[0]},
                                             associations=[])
            for d in domains]),
        _request_timeout=TIMEOUT)


def refusal(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_upsert_by_email_creates_then_updates_and_the_answer_parses(portal) -> None:
    emulator, client = portal
    first = upsert_contacts(client, "ann@x.io", "bo@x.io", firstname="A")
    assert type(first).__name__ == "BatchResponseSimplePublicUpsertObject"
    assert first.status == "COMPLETE" and [r.new for r in first.results] == [True, True]
    again = upsert_contacts(client, "ANN@x.io", firstname="Ann")

    by_email = {r.properties["email"]: r.id for r in first.results}
    assert again.results[0].new is False and again.results[0].id == by_email["ann@x.io"]
    records = emulator.records("contacts")
    assert {r["properties"]["email"]: r["properties"]["firstname"] for r in records.values()} \
        == {"ann@x.io": "Ann", "bo@x.io": "A"}
    assert emulator.state()["stats"]["contract_violations"] == []


def test_one_bad_email_refuses_the_batch_with_a_400_the_library_raises(portal) -> None:
    emulator, client = portal
    with pytest.raises(ApiException) as refused:
        upsert_contacts(client, "ok@x.io", "not-an-email", firstname="A")
    assert refused.value.status == 400
    body = refusal(refused.value)
    assert body["category"] == "VALIDATION_ERROR" and "INVALID_EMAIL" in body["message"]
    assert emulator.records("contacts") == {}


def test_traced_inputs_get_a_207_whose_errors_parse(portal) -> None:
    emulator, client = portal
    answer = client.crm.contacts.batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            SimplePublicObjectBatchInputUpsert(id=e, id_property="email", properties={},
                                               object_write_trace_id=f"t{i}")
            for i, e in enumerate(["ok@x.io", "not-an-email"])]),
        _request_timeout=TIMEOUT)
    assert type(answer).__name__ == "BatchResponseSimplePublicUpsertObjectWithErrors"
    assert answer.num_errors == 1 and [r.properties["email"] for r in answer.results] == [
        "ok@x.io"]
    [bad] = answer.errors
    assert bad.category == "VALIDATION_ERROR" and bad.context["objectWriteTraceId"] == ["t1"]
    assert bad.errors == [] and bad.links == {}  # required by HubSpot's StandardError
    assert len(emulator.records("contacts")) == 1


def test_update_by_id_changes_the_email_and_names_what_it_did_not_find(portal) -> None:
    emulator, client = portal
    ann = upsert_contacts(client, "ann@x.io").results[0].id
    answer = client.crm.contacts.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(inputs=[
            SimplePublicObjectBatchInput(id=ann, properties={"email": "ann@new.io"}),
            SimplePublicObjectBatchInput(id="424242", properties={"firstname": "Ghost"})]),
        _request_timeout=TIMEOUT)
    assert type(answer).__name__ == "BatchResponseSimplePublicObjectWithErrors"
    assert [r.id for r in answer.results] == [ann]
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context == {"ids": ["424242"]}
    assert emulator.records("contacts")[ann]["properties"]["email"] == "ann@new.io"


def test_batch_read_by_email_and_by_id(portal) -> None:
    _, client = portal
    ann = upsert_contacts(client, "ann@x.io").results[0].id
    read = client.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            id_property="email", properties=["email"], properties_with_history=[],
            inputs=[SimplePublicObjectId(id="ANN@x.io"), SimplePublicObjectId(id="no@x.io")]),
        _request_timeout=TIMEOUT)
    assert [(r.id, r.properties["email"]) for r in read.results] == [(ann, "ann@x.io")]
    assert read.errors[0].context["ids"] == ["no@x.io"]
    by_id = client.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(properties=["email"], properties_with_history=[],
                                           inputs=[SimplePublicObjectId(id=ann)]),
        _request_timeout=TIMEOUT)
    assert type(by_id).__name__ == "BatchResponseSimplePublicObject" and by_id.results[0].id == ann


def test_archive_answers_nothing_and_keeps_the_record_archived(portal) -> None:
    emulator, client = portal
    ann = upsert_contacts(client, "ann@x.io").results[0].id
    gone = client.crm.contacts.batch_api.archive(
        BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=ann),
                                               SimplePublicObjectId(id="999999")]),
        _request_timeout=TIMEOUT)
    assert gone is None  # 204: the library declares no body
    assert emulator.records("contacts") == {}
    assert emulator.state()["objects"]["contacts"][ann]["archived"] is True


def test_credential_check_reads_a_page_of_contacts(portal) -> None:
    _, client = portal
    upsert_contacts(client, "ann@x.io", "bo@x.io")
    page = client.crm.contacts.basic_api.get_page(limit=1, _request_timeout=TIMEOUT)
    assert len(page.results) == 1 and page.paging.next.after
    with pytest.raises(ApiException) as refused:
        Client.create(access_token="pat-wrong", host=client.config["host"],
                      retry=Retry(total=0)).crm.contacts.basic_api.get_page(limit=1)
    assert refused.value.status == 401
    assert refusal(refused.value)["category"] == "INVALID_AUTHENTICATION"


def test_domain_is_refused_as_an_id_property_as_hubspot_refuses_it(portal) -> None:
    emulator, client = portal
    upsert = companies.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        companies.SimplePublicObjectBatchInputUpsert(id="acme.com", id_property="domain",
                                                     properties={"name": "Acme"})])
    with pytest.raises(companies.ApiException) as refused:
        client.crm.companies.batch_api.upsert(upsert, _request_timeout=TIMEOUT)
    assert refused.value.status == 400
    body = refusal(refused.value)
    assert (body["category"], body["message"]) == (
        "VALIDATION_ERROR", "Unable to perform update/upsert by non-unique 0-2 property domain")
    with pytest.raises(companies.ApiException) as read:
        client.crm.companies.batch_api.read(companies.BatchReadInputSimplePublicObjectId(
            id_property="domain", properties=["domain"], properties_with_history=[],
            inputs=[companies.SimplePublicObjectId(id="acme.com")]), _request_timeout=TIMEOUT)
    assert read.value.status == 400
    assert emulator.records("companies") == {}


def test_batch_create_makes_companies_even_with_a_domain_already_held(portal) -> None:
    emulator, client = portal
    created = create_companies(client, "acme.com", "globex.com")
    assert type(created).__name__ == "BatchResponseSimplePublicObject"
    twice = create_companies(client, "acme.com")  # HubSpot does not deduplicate API creates
    ids = [r.id for r in created.results] + [twice.results[0].id]
    assert len(set(ids)) == 3
    assert sorted(r["properties"]["domain"] for r in emulator.records("companies").values()) \
        == ["acme.com", "acme.com", "globex.com"]
    def create_contact(email: str):
        return client.crm.contacts.batch_api.create(
            contacts.BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
                contacts.SimplePublicObjectInputForCreate(properties={"email": email},
                                                          associations=[])]),
            _request_timeout=TIMEOUT)

    ann = create_contact("a@x.io").results[0].id
    with pytest.raises(ApiException) as conflict:  # a unique value held: 409, no 2nd record
        create_contact("A@x.io")
    assert conflict.value.status == 409 and refusal(conflict.value)["category"] == "CONFLICT"
    assert refusal(conflict.value)["message"] == f"Contact already exists. Existing ID: {ann}"
    assert len(emulator.records("contacts")) == 1


def test_a_property_definition_parses_and_says_whether_its_values_are_unique() -> None:
    """What retl asks once a run before matching on a property other than a contact's email."""
    emulator = HubSpotEmulator({TOKEN}, unique_properties={"contacts": {"email"},
                                                            "companies": {"acme_id"}},
                               properties={"contacts": {"firstname"}, "companies": {"domain"}})
    with EmulatorServer(build_hubspot_app(emulator)).start() as server:
        core = connect(server.url).crm.properties.core_api
        email = core.get_by_name("contacts", "email", _request_timeout=TIMEOUT)
        domain = core.get_by_name("companies", "domain", _request_timeout=TIMEOUT)
        own = core.get_by_name("companies", "acme_id", _request_timeout=TIMEOUT)
        with pytest.raises(properties.ApiException) as missing:
            core.get_by_name("companies", "nope", _request_timeout=TIMEOUT)
    assert type(email).__name__ == "ModelProperty"  # every required field present
    assert (email.name, email.has_unique_value, email.hubspot_defined) == ("email", True, True)
    assert (domain.name, domain.has_unique_value, domain.group_name) == (
        "domain", False, "companyinformation")
    assert (own.has_unique_value, own.hubspot_defined) == (True, False)
    assert missing.value.status == 404
    assert refusal(missing.value)["category"] == "OBJECT_NOT_FOUND"


def test_default_associations_batch_and_single(portal) -> None:
    emulator, client = portal
    ann, bo = (r.id for r in upsert_contacts(client, "ann@x.io", "bo@x.io").results)
    acme = create_companies(client, "acme.com").results[0].id
    v4 = client.crm.associations.v4
    answer = v4.batch_api.create_default(
        "contacts", "companies",
        BatchInputPublicDefaultAssociationMultiPost(inputs=[
            PublicDefaultAssociationMultiPost(_from=AssociationId(id=ann),
                                              to=AssociationId(id=acme)),
            PublicDefaultAssociationMultiPost(_from=AssociationId(id="424242"),
                                              to=AssociationId(id=acme))]),
        _request_timeout=TIMEOUT)
    assert type(answer).__name__ == "BatchResponsePublicDefaultAssociation"
    # Each pair in both directions: contact to company 279, company to contact 280.
    assert [(r._from.id, r.to.id, r.association_spec.association_category,
             r.association_spec.association_type_id) for r in answer.results] == [
        (ann, acme, "HUBSPOT_DEFINED", 279), (acme, ann, "HUBSPOT_DEFINED", 280)]
    assert answer.num_errors == 1 and answer.errors[0].context["fromId"] == ["424242"]

    # HubSpot's guide allows the singular names (contact, company) in the path.
    single = v4.basic_api.create_default("contact", bo, "company", acme,
                                         _request_timeout=TIMEOUT)
    assert single.results[0].association_spec.association_type_id == 279
    assert [(a["fromId"], a["toId"], a["associationTypeId"])
            for a in emulator.state()["associations"]] == sorted(
        [(ann, acme, 279), (bo, acme, 279)])
    with pytest.raises(associations.v4.ApiException) as unknown:
        v4.basic_api.create_default("contacts", "424242", "companies", acme,
                                    _request_timeout=TIMEOUT)
    assert unknown.value.status == 400


def search(client: Client, *filters: Filter, groups: list[list[Filter]] | None = None,
           **request):
    filter_groups = [FilterGroup(filters=g) for g in groups] if groups is not None else [
        FilterGroup(filters=list(filters))]
    return client.crm.companies.search_api.do_search(
        PublicObjectSearchRequest(filter_groups=filter_groups, **request),
        _request_timeout=TIMEOUT)


def test_search_finds_companies_by_domain_with_eq_and_in(portal) -> None:
    _, client = portal
    created = create_companies(client, "acme.com", "globex.com", "initech.com")
    ids = {r.properties["domain"]: r.id for r in created.results}

    found = search(client, Filter(property_name="domain", operator="EQ", value="ACME.com"),
                   properties=["domain", "name"])
    assert type(found).__name__ == "CollectionResponseWithTotalSimplePublicObjectForwardPaging"
    assert found.total == 1 and found.paging is None
    [acme] = found.results
    assert (acme.id, acme.properties["domain"], acme.properties["name"]) == (
        ids["acme.com"], "acme.com", "acme")
    assert acme.properties["hs_object_id"] == acme.id

    several = search(client, Filter(property_name="domain", operator="IN",
                                    values=["globex.com", "initech.com", "nowhere.io"]))
    assert sorted(r.id for r in several.results) == sorted([ids["globex.com"],
                                                            ids["initech.com"]])
    # Groups are ORed, the filters of one group ANDed.
    either = search(client, groups=[
        [Filter(property_name="domain", operator="EQ", value="acme.com"),
         Filter(property_name="name", operator="EQ", value="globex")],
        [Filter(property_name="name", operator="EQ", value="initech")]])
    assert [r.id for r in either.results] == [ids["initech.com"]]


@pytest.fixture
def unpaced_portal() -> Iterator[tuple[HubSpotEmulator, Client]]:
    """A portal whose search limit is out of the way, for tests of more than 5 searches."""
    emulator = HubSpotEmulator({TOKEN}, search_rate_limit=(1000, 1.0))
    with EmulatorServer(build_hubspot_app(emulator)).start() as server:
        yield emulator, connect(server.url)


def test_search_pages_with_after_and_refuses_beyond_the_limits(unpaced_portal) -> None:
    _, client = unpaced_portal
    domains = [f"c{i:02d}.io" for i in range(7)]
    create_companies(client, *domains)
    has = Filter(property_name="domain", operator="HAS_PROPERTY")
    seen, after, pages = [], None, 0
    while pages < 10:
        page = search(client, has, limit=3, after=after, sorts=["domain"],
                      properties=["domain"])
        assert page.total == 7
        seen += [r.properties["domain"] for r in page.results]
        pages += 1
        if page.paging is None:
            break
        after = page.paging.next.after
    assert (seen, pages) == (domains, 3)

    too_many = [Filter(property_name="domain", operator="HAS_PROPERTY")] * 7
    for request in ({"groups": [too_many]}, {"groups": [[has]] * 6}, {"limit": 201},
                    {"after": "9999", "limit": 2}):
        groups = request.pop("groups", None)
        with pytest.raises(companies.ApiException) as refused:
            search(client, has, groups=groups, **request)
        assert refused.value.status == 400, request
        assert refusal(refused.value)["category"] in ("VALIDATION_ERROR",), request


def test_search_operators_sorts_and_query(unpaced_portal) -> None:
    _, client = unpaced_portal
    client.crm.companies.batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(inputs=[
            SimplePublicObjectInputForCreate(properties=p, associations=[]) for p in (
                {"domain": "acme.com", "name": "Acme Rockets", "numberofemployees": "50"},
                {"domain": "globex.com", "name": "Globex", "numberofemployees": "500"},
                {"name": "No Domain Ltd", "numberofemployees": "5"})]),
        _request_timeout=TIMEOUT)

    def names(*filters: Filter, **request) -> list[str]:
        return [r.properties["name"]
                for r in search(client, *filters, properties=["name"], **request).results]

    assert names(Filter(property_name="domain", operator="NOT_HAS_PROPERTY")) == [
        "No Domain Ltd"]
    assert names(Filter(property_name="domain", operator="NEQ", value="acme.com")) == [
        "Globex", "No Domain Ltd"]
    assert names(Filter(property_name="domain", operator="NOT_IN", values=["acme.com"]),
                 Filter(property_name="domain", operator="HAS_PROPERTY")) == ["Globex"]
    assert names(Filter(property_name="numberofemployees", operator="BETWEEN", value="10",
                        high_value="500"), sorts=["-numberofemployees"]) == [
        "Globex", "Acme Rockets"]
    assert names(Filter(property_name="numberofemployees", operator="LT", value="60")) == [
        "Acme Rockets", "No Domain Ltd"]
    assert names(Filter(property_name="name", operator="CONTAINS_TOKEN", value="rock*")) == [
        "Acme Rockets"]
    assert names(query="globex") == ["Globex"]
    assert names(sorts=[{"propertyName": "name", "direction": "DESCENDING"}]) == [
        "No Domain Ltd", "Globex", "Acme Rockets"]


def test_search_is_limited_to_five_a_second_answered_429_without_rate_headers() -> None:
    assert inspect.signature(HubSpotEmulator).parameters["search_rate_limit"].default == (5, 1.0)
    # The published five a second, held over a longer window so a slow machine still sends
    # the sixth inside it.
    emulator = HubSpotEmulator({TOKEN}, search_rate_limit=(5, 30.0))
    with EmulatorServer(build_hubspot_app(emulator)).start() as server:
        client = connect(server.url)
        has = Filter(property_name="domain", operator="HAS_PROPERTY")
        for _ in range(5):
            search(client, has)
        with pytest.raises(companies.ApiException) as limited:
            search(client, has)
        upserted = upsert_contacts(client, "ann@x.io")  # the other endpoints are not held
    assert limited.value.status == 429
    body = refusal(limited.value)
    assert (body["errorType"], body["policyName"], body["message"]) == (
        "RATE_LIMIT", "SECONDLY", "You have reached your secondly limit.")
    assert not [h for h in limited.value.headers if h.lower().startswith("x-hubspot-ratelimit")]
    assert upserted.results[0].new is True
    assert emulator.state()["stats"]["rate_limited"]["SECONDLY"] == 1


def test_the_ten_second_and_daily_limits_answer_429_with_their_policy() -> None:
    emulator = HubSpotEmulator({TOKEN}, rate_limit=(2, 30.0), daily_limit=3)
    with EmulatorServer(build_hubspot_app(emulator)).start() as server:
        client = connect(server.url)
        ok = client.crm.contacts.basic_api.get_page_with_http_info(limit=1,
                                                                   _request_timeout=TIMEOUT)
        upsert_contacts(client, "ann@x.io")
        with pytest.raises(ApiException) as window:
            upsert_contacts(client, "bo@x.io")
        emulator._window.clear()  # as if the ten seconds had passed
        upsert_contacts(client, "cy@x.io")
        with pytest.raises(ApiException) as day:
            upsert_contacts(client, "di@x.io")
    headers = {k.lower(): v for k, v in ok[2].items()}
    assert headers["x-hubspot-ratelimit-max"] == "2"
    assert headers["x-hubspot-ratelimit-daily"] == "3"
    assert window.value.status == 429 and day.value.status == 429
    assert (refusal(window.value)["errorType"], refusal(window.value)["policyName"]) == (
        "RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert refusal(day.value)["policyName"] == "DAILY"
    assert sorted(r["properties"]["email"] for r in emulator.records("contacts").values()) == [
        "ann@x.io", "cy@x.io"]
