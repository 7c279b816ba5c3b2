"""A record is delivered only when the destination's answer accounts for it.

Every writer whose vendor answers per record is fed answers with missing, extra, duplicated
and unattributable entries, in the vendor's own shapes, through the real delivery engine.
Four records go out (k0..k3): the vendor takes k0 and k1, refuses k2, and what it says of
k3 is the scenario. A record the answer does not account for must never count as delivered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from retl_assets.destinations import braze, clevertap, conversion, hubspot, iterable, mixpanel
from retl_assets.destinations import salesforce, webhook
from retl_assets.destinations.base import UNCONFIRMED, Answer, Capabilities, Record
from retl_assets.destinations.delivery import Outcome, deliver
from retl_assets.project.schema import SyncConfig

KEYS = ["k0", "k1", "k2", "k3"]
D, R, U = "delivered", "rejected", "unconfirmed"


def sync(**kw) -> SyncConfig:
    return SyncConfig(model="contacts", destination="d", **kw)


@dataclass
class Vendor:
    """How one vendor's writer is built, what a record looks like, and how the vendor
    answers a request: `answer(items, scenario)`, items being the request's records."""

    writer: Callable[[], object]
    operation: str
    payload: Callable[[str, int], dict]
    items: Callable[[httpx.Request], list[dict]]
    key_of: Callable[[dict], str]
    answer: Callable[[list[dict], Callable[[dict], str], str], httpx.Response]


def body_items(field: str | None) -> Callable[[httpx.Request], list[dict]]:
    def items(request: httpx.Request) -> list[dict]:
        body = json.loads(request.content)
        return body if field is None else body[field]
    return items


def run(vendor: Vendor, scenario: str) -> dict[str, Outcome]:
    writer = vendor.writer()

    def handler(request: httpx.Request) -> httpx.Response:
        return vendor.answer(vendor.items(request), vendor.key_of, scenario)

    records = [Record(f"m{i}", k, json.dumps(vendor.payload(k, i)), vendor.operation)
               for i, k in enumerate(KEYS)]
    seen: list[Outcome] = []
    deliver(writer, records, seen.extend, max_retries=0, transport=httpx.MockTransport(handler))
    assert sorted(o.record.key for o in seen) == KEYS  # every record has exactly one outcome
    return {o.record.key: o for o in seen}


# --- HubSpot: results matched by the unique value; errors name inputs in context.ids -------

def hubspot_answer(items, key_of, scenario):
    results = [{"id": f"10{i}", "properties": {"email": item["id"]}}
               for i, item in enumerate(items) if key_of(item) in ("k0", "k1")]
    errors = [{"status": "error", "category": "VALIDATION_ERROR", "message": "bad k2",
               "context": {"ids": [item["id"] for item in items if key_of(item) == "k2"]}}]
    k3 = [item for item in items if key_of(item) == "k3"]
    if scenario == "extra" and k3:
        results += [{"id": "103", "properties": {"email": k3[0]["id"]}},
                    {"id": "999", "properties": {"email": "stranger@x.io"}}]
    elif scenario == "duplicated" and k3:
        results += [{"id": "103", "properties": {"email": k3[0]["id"]}}] * 2
    elif scenario == "unplaced":
        errors.append({"status": "error", "category": "INVALID", "message": "who?",
                       "context": {}})
    return httpx.Response(207, json={"status": "COMPLETE", "results": results,
                                     "errors": errors, "numErrors": len(errors)})


HUBSPOT = Vendor(
    writer=lambda: hubspot.connect("d", hubspot.HubSpotConfig(
        type="hubspot", access_token="t", base_url="http://hs")).writer(
            "s", sync(action="upsert", object="contacts", match={"email": "email"})),
    operation="upsert",
    payload=lambda k, i: {"idProperty": "email", "id": f"{k}@x.io", "properties": {}},
    items=body_items("inputs"),
    key_of=lambda item: item["id"].split("@")[0],
    answer=hubspot_answer,
)


# --- Braze: a 201 naming failed objects by index in their array ---------------------------

def braze_answer(items, key_of, scenario):
    errors = [{"type": "bad k2", "input_array": "attributes", "index": i}
              for i, item in enumerate(items) if key_of(item) == "k2"]
    if scenario == "extra":
        errors.append({"type": "not ours", "input_array": "attributes", "index": len(items) + 5})
    elif scenario == "duplicated":
        errors += errors
    elif scenario == "unplaced":
        errors.append({"type": "something failed"})
    return httpx.Response(201, json={"message": "success", "errors": errors})


BRAZE = Vendor(
    writer=lambda: braze.connect("d", braze.BrazeConfig(
        type="braze", api_key="t", base_url="http://braze")).writer(
            "s", sync(action="upsert", match={"external_id": "userId"})),
    operation="attributes",
    payload=lambda k, i: {"external_id": k},
    items=body_items("attributes"),
    key_of=lambda item: item["external_id"],
    answer=braze_answer,
)


# --- Iterable: failedUpdates by email, and successCount -----------------------------------

def iterable_answer(items, key_of, scenario):
    failed = [item["email"] for item in items if key_of(item) == "k2"]
    taken = len(items) - len(failed)
    if scenario == "missing":
        taken -= 1  # it says it took fewer than it did not name
    elif scenario == "duplicated":
        failed += failed
    elif scenario == "extra":
        failed.append("stranger@x.io")
    body = {"successCount": taken, "failCount": len(items) - taken,
            "failedUpdates": {"invalidEmails": failed}}
    return httpx.Response(200, json=body)


ITERABLE = Vendor(
    writer=lambda: iterable.connect("d", iterable.IterableConfig(
        type="iterable", api_key="t", base_url="http://it")).writer(
            "s", sync(action="upsert", match={"email": "email"})),
    operation="bulkUpdate",
    payload=lambda k, i: {"email": f"{k}@x.io", "dataFields": {}},
    items=body_items("users"),
    key_of=lambda item: item["email"].split("@")[0],
    answer=iterable_answer,
)


# --- Mixpanel /import: a 400 naming failed events by index and $insert_id ----------------

def mixpanel_answer(items, key_of, scenario):
    failed = [{"index": i, "$insert_id": item["properties"]["$insert_id"], "field": "x",
               "message": "bad k2"} for i, item in enumerate(items) if key_of(item) == "k2"]
    imported = len(items) - len(failed)
    if scenario == "missing":
        imported -= 1
    elif scenario == "duplicated":
        failed += failed
    elif scenario in ("extra", "unplaced"):
        failed.append({"index": 99, "$insert_id": "stranger", "message": "who?"})
    if not failed:
        return httpx.Response(200, json={"code": 200, "num_records_imported": imported,
                                         "status": "OK"})
    return httpx.Response(400, json={"code": 400, "error": "some data points in the request "
                                     "failed validation", "failed_records": failed,
                                     "num_records_imported": imported, "status": "Bad Request"})


MIXPANEL = Vendor(
    writer=lambda: mixpanel.connect("d", mixpanel.MixpanelConfig(
        type="mixpanel", project_token="t", base_url="http://mp")).writer(
            "s", sync(action="track", match={"distinct_id": "userId"},
                      mapping={"event": {"value": "Seen"}})),
    operation="import",
    payload=lambda k, i: {"event": "Seen", "properties": {"distinct_id": k,
                                                          "$insert_id": f"ins-{k}"}},
    items=body_items(None),
    key_of=lambda item: item["properties"]["distinct_id"],
    answer=mixpanel_answer,
)


# --- CleverTap /1/upload: unprocessed entries echo their record; `processed` counts -------

def clevertap_answer(items, key_of, scenario):
    unprocessed = [{"status": "fail", "code": 509, "error": "bad k2", "record": item}
                   for item in items if key_of(item) == "k2"]
    processed = len(items) - len(unprocessed)
    if scenario == "missing":
        processed -= 1
    elif scenario == "duplicated":
        unprocessed += unprocessed
    elif scenario in ("extra", "unplaced"):
        unprocessed.append({"status": "fail", "code": 500, "error": "who?",
                            "record": {"identity": "stranger", "type": "profile"}})
    status = "partial" if unprocessed else "success"
    return httpx.Response(200, json={"status": status, "processed": processed,
                                     "unprocessed": unprocessed})


CLEVERTAP = Vendor(
    writer=lambda: clevertap.connect("d", clevertap.CleverTapConfig(
        type="clevertap", account_id="a", passcode="p", base_url="http://ct")).writer(
            "s", sync(action="profile", match={"identity": "userId"})),
    operation="profile",
    payload=lambda k, i: {"identity": k, "type": "profile", "profileData": {}},
    items=body_items("d"),
    key_of=lambda item: item["identity"],
    answer=clevertap_answer,
)


# --- Webhook: `errors` naming items by index or idempotency key ---------------------------

def webhook_answer(items, key_of, scenario):
    errors = [{"index": i, "message": "bad k2"} for i, item in enumerate(items)
              if key_of(item) == "k2"]
    if scenario == "duplicated":
        errors += errors
    elif scenario == "extra":
        errors.append({"idempotency_key": "not-ours", "message": "who?"})
    elif scenario == "unplaced":
        errors.append({"message": "something failed"})
    return httpx.Response(200, json={"errors": errors})


WEBHOOK = Vendor(
    writer=lambda: webhook.connect("d", webhook.WebhookConfig(
        type="webhook", url="http://localhost/hook", secret="s")).writer("s", sync(action="send")),
    operation="upsert",
    payload=lambda k, i: {"idempotency_key": f"m{i}", "operation": "upsert", "key": k,
                          "data": {}},
    items=body_items("batch"),
    key_of=lambda item: item["key"],
    answer=webhook_answer,
)


# --- Salesforce and Conversion: one result per record, in request order -------------------

def positional(results_of: Callable[[list[dict]], object]):
    def answer(items, key_of, scenario):
        results = [{"success": True, "id": f"id-{key_of(item)}"} if key_of(item) != "k2"
                   else {"success": False, "errors": [{"statusCode": "INVALID", "message":
                                                        "bad k2"}]} for item in items]
        if scenario == "missing" and len(items) > 1:
            results = results[:-1]
        elif scenario in ("extra", "duplicated") and len(items) > 1:
            results = results + results[-1:]
        return httpx.Response(200, json=results_of(results))
    return answer


SALESFORCE = Vendor(
    writer=lambda: salesforce.connect("d", salesforce.SalesforceConfig(
        type="salesforce", access_token="t", instance_url="http://sf")).writer(
            "s", sync(action="upsert", object="Contact", match={"Ext__c": "userId"})),
    operation="upsert",
    payload=lambda k, i: {"attributes": {"type": "Contact"}, "Ext__c": k},
    items=body_items("records"),
    key_of=lambda item: item["Ext__c"],
    answer=positional(lambda results: results),
)

CONVERSION = Vendor(
    writer=lambda: conversion.connect("d", conversion.ConversionConfig(
        type="conversion", api_key="t", base_url="http://cv")).writer(
            "s", sync(action="upsert", match={"email": "email"})),
    operation="upsert",
    payload=lambda k, i: {"email": f"{k}@x.io"},
    items=body_items("contacts"),
    key_of=lambda item: item["email"].split("@")[0],
    answer=positional(lambda results: {"data": {"results": [
        {**r, "cnvContactId": r.get("id")} for r in results]}}),
)

# Per scenario, what becomes of k3 (k0, k1 delivered and k2 rejected unless said otherwise).
# None: the vendor's answer cannot say it. "all": nothing unnamed is confirmed.
EXPECTED = {
    "hubspot": {"missing": U, "extra": D, "duplicated": D, "unplaced": U},
    "braze": {"missing": None, "extra": "all", "duplicated": D, "unplaced": "all"},
    "iterable": {"missing": "all", "extra": D, "duplicated": D, "unplaced": None},
    "mixpanel": {"missing": "all", "extra": "all", "duplicated": D, "unplaced": "all"},
    "clevertap": {"missing": "all", "extra": "isolated", "duplicated": D, "unplaced": "isolated"},
    "webhook": {"missing": None, "extra": "all", "duplicated": D, "unplaced": "all"},
    "salesforce": {"missing": "resent", "extra": "resent", "duplicated": "resent",
                   "unplaced": None},
    "conversion": {"missing": "resent", "extra": "resent", "duplicated": "resent",
                   "unplaced": None},
}
VENDORS = {"hubspot": HUBSPOT, "braze": BRAZE, "iterable": ITERABLE, "mixpanel": MIXPANEL,
           "clevertap": CLEVERTAP, "webhook": WEBHOOK, "salesforce": SALESFORCE,
           "conversion": CONVERSION}
CASES = [(v, s) for v, by in EXPECTED.items() for s, k3 in by.items() if k3 is not None]


@pytest.mark.parametrize("vendor,scenario", CASES)
def test_only_what_the_answer_accounts_for_is_delivered(vendor, scenario):
    outcomes = run(VENDORS[vendor], scenario)
    status = {k: o.status for k, o in outcomes.items()}
    k3 = EXPECTED[vendor][scenario]
    if k3 == "all":
        # A failure the answer cannot place (or a count that disagrees): of the records it
        # did not name, none can be known to have landed.
        assert status == {"k0": U, "k1": U, "k2": R, "k3": U}
        assert all(UNCONFIRMED in outcomes[k].error for k in ("k0", "k1", "k3"))
    elif k3 == "resent":
        # An answer that cannot be paired with the records is not trusted: retried (here
        # with no retries left, so owed), never counted as delivered.
        assert status == {"k0": "unsent", "k1": "unsent", "k2": "unsent", "k3": "unsent"}
    elif k3 == "isolated":
        # CleverTap: an echo it cannot place makes the engine split the batch until each
        # request holds one record; a failure in that answer is then the record's own.
        assert status == {"k0": R, "k1": R, "k2": R, "k3": R}
    else:
        assert status == {"k0": D, "k1": D, "k2": R, "k3": k3}
    if k3 == U:
        assert outcomes["k3"].error.startswith(UNCONFIRMED)
    assert outcomes["k2"].error  # a refusal keeps the vendor's reason


class ResultsWriter:
    """A bare per-record writer: its answer names the records in `confirm`."""

    destination = "fake"

    def __init__(self, confirm: set[int], kind: str = "results"):
        self.capabilities = Capabilities(records_per_request=10, bytes_per_request=10_000,
                                         bytes_per_record=100, answers=kind)
        self.confirm = confirm

    def request(self, client, operation, records):
        return client.build_request("POST", "http://vendor/x", content=b"[]")

    def read(self, response, operation, records):
        return Answer(confirmed={i for i in self.confirm if i < len(records)})


def test_the_engine_counts_unconfirmed_records_as_failed_and_keeps_the_answer_text():
    seen: list[Outcome] = []
    report = deliver(ResultsWriter({0, 2}), [Record(f"m{i}", f"k{i}", "{}") for i in range(4)],
                     seen.extend, transport=httpx.MockTransport(
                         lambda request: httpx.Response(200, text="took some")))
    assert (report.delivered, report.unconfirmed, report.rejected) == (2, 2, 0)
    by_key = {o.record.key: o for o in seen}
    assert by_key["k1"].status == by_key["k3"].status == "unconfirmed"
    assert by_key["k1"].error == f"{UNCONFIRMED}; it answered: took some"


def test_a_whole_answer_confirms_every_record_it_does_not_name():
    seen: list[Outcome] = []
    report = deliver(ResultsWriter(set(), kind="whole"),
                     [Record(f"m{i}", f"k{i}", "{}") for i in range(3)], seen.extend,
                     transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    assert report.delivered == 3 and report.unconfirmed == 0


class ForgetfulAnswers:
    """ASGI middleware in front of a real emulator: while `forget` names emails, the batch
    upsert answers leave those results out (the records are written, the answer is silent
    about them), and add an error that names no input, as HubSpot's free-form context may."""

    def __init__(self, app):
        self.app, self.forget = app, set()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/batch/upsert") \
                or not self.forget:
            return await self.app(scope, receive, send)
        start, chunks = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = json.loads(b"".join(chunks) or b"{}")
        body["results"] = [r for r in body.get("results", [])
                           if r["properties"].get("email") not in self.forget]
        body["errors"] = body.get("errors", []) + [
            {"status": "error", "category": "INTERNAL", "message": "partly done", "context": {}}]
        content = json.dumps(body).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "status": 207,
                    "headers": headers + [(b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})


def test_records_the_answer_left_out_stay_owed_with_the_reason_and_land_next_run(
        workspace, monkeypatch):
    from retl_assets.emulators import EmulatorServer, HubSpotEmulator, build_hubspot_app
    from retl_assets_tests.destinations.hubspot.test_hubspot import (
        PROJECT,
        TOKEN,
        crm_contacts,
        model_contacts,
    )

    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    emu = HubSpotEmulator({TOKEN}, rate_limit=(100, 10.0))
    app = ForgetfulAnswers(build_hubspot_app(emu))
    forgotten = {e for (e,) in workspace.sql("SELECT email FROM contacts ORDER BY id LIMIT 7")}
    app.forget = forgotten
    with EmulatorServer(app).start() as server:
        workspace.write(PROJECT.format(url=server.url))
        first = workspace.sync()
        s = first.syncs["contacts_to_crm"]
        assert first.status == "failure"  # unconfirmed records fail the run, loudly
        assert (s["sent"], s["succeeded"], s["unconfirmed"], s["failed"], s["owed"]) == (
            300, 293, 7, 7, 7)
        owed = workspace.owed("contacts_to_crm")
        emails = dict(workspace.sql("SELECT id, email FROM contacts"))
        assert {emails[k] for k in owed} == forgotten
        assert all(UNCONFIRMED in why for why in owed.values())

        app.forget = set()
        second = workspace.sync()
        s = second.syncs["contacts_to_crm"]
        assert second.status == "success", second.errors
        assert (s["sent"], s["succeeded"], s["owed"]) == (7, 7, 0)
        assert crm_contacts(emu) == model_contacts(workspace)  # each contact once
