"""What each destination type declares to run the contract suite (test_contract.py).

A case is a user's project snippet for the type (its destination entry and a sync with the
vendor's typical action and match, on the shared `contacts` model), how to start its
emulator with the credential, how to read what the emulator holds as {primary key: fields
synced}, how to make one record be refused, the emulator's counters a sync moves, and the
vendor's published limits as the emulator measured them. A destination type registered in
retl_assets/vendors.py without a case here fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from retl_assets.emulators.braze import BrazeEmulator, build_braze_app
from retl_assets.emulators.clarify import ClarifyEmulator, build_clarify_app
from retl_assets.emulators.clevertap import CleverTapEmulator, build_clevertap_app
from retl_assets.emulators.conversion import ConversionEmulator, build_conversion_app
from retl_assets.emulators.hubspot import HubSpotEmulator, build_hubspot_app
from retl_assets.emulators.iterable import IterableEmulator, build_iterable_app
from retl_assets.emulators.iterable.api import RATES as ITERABLE_RATES
from retl_assets.emulators.mixpanel import MixpanelEmulator, build_mixpanel_app
from retl_assets.emulators.mixpanel.api import EVENTS_LIMIT as MIXPANEL_EVENTS
from retl_assets.emulators.salesforce import SalesforceEmulator, build_salesforce_app
from retl_assets.emulators.segment import SegmentEmulator, build_segment_app
from retl_assets.emulators.webhook import WebhookEmulator, build_webhook_app

Fields = dict[str, dict[str, Any]]  # primary key -> the fields synced, by model column


class Peak(NamedTuple):
    """The most the emulator saw of something the vendor limits, and the limit."""

    what: str
    seen: int
    limit: int
    least: int = 1  # in the rate story: the run really reached this many (0: nothing to show)


@dataclass(frozen=True)
class Refusal:
    """How to make the row `{key}` one the vendor refuses, and what it answers."""

    sql: str  # run once per refused key, `{key}` its primary key
    reason: str  # a regular expression the owed reason matches after "rejected: "
    # The most requests the first sync may make (300 rows, two refused): the first sync's own
    # where the vendor answers per record; where it refuses a batch whole, each refused
    # record costs its batch two requests a halving, at worst.
    requests: int
    faults: dict[str, Any] = field(default_factory=dict)  # emulator faults for the story
    destination: str = ""  # destination lines the story adds, when the case says why
    why: str = ""


@dataclass(frozen=True)
class RateStory:
    """The published-rate story: `rows` rows in one run, within the vendor's limits."""

    rows: int = 20_000
    destination: str = ""  # destination lines the story adds (batch size, concurrency)
    knobs: dict[str, Any] = field(default_factory=dict)  # emulator arguments, alike
    faults: dict[str, Any] = field(default_factory=dict)  # e.g. latency, to keep requests open
    requests: int | None = None  # how many requests the run makes, where it is fixed
    why: str = ""  # why the case scales the vendor's limit, when it does


@dataclass(frozen=True)
class Case:
    kind: str  # the destination type, as registered in retl_assets/vendors.py
    destination: str  # the destination entry's lines ({url}: the emulator)
    syncs: str  # the syncs: entries; the first is `contacts_to_<kind>`
    env: str  # the credential's environment variable
    secret: str  # its right value
    serve: Callable[..., Any]  # (pace=None, **knobs) -> the emulator's ASGI app
    read: Callable[[Any, Any], Fields]  # (emulator, workspace) -> what it holds
    first: dict[str, int]  # emulator counters the first sync (300 rows) moves, and by how much
    second: dict[str, int]  # ...the second (one insert, one update, two deletes)
    refusal: Refusal
    peaks: Callable[[dict[str, Any], dict[str, Any]], list[Peak]]  # (stats, knobs)
    rate: RateStory = RateStory()
    model: Callable[[Any], Fields] | None = None  # the fields expected; default model_fields
    columns: str = ""  # more columns for the model's SELECT
    # A pace given to both sides (the project's `rate_limit` and the emulator) in every story
    # but the first, where the vendor's published one makes the stories slow; and why.
    pace: tuple[int, float] | None = None
    pace_why: str = ""
    refused_says: str = ""  # what the credential refusal also names
    refusal_counter: str = ""  # the emulator's count of requests a wrong credential made
    # Where the vendor cannot tell a wrong credential, why; the story asserts what is true.
    undetectable_credential: str = ""

    @property
    def sync(self) -> str:
        return f"contacts_to_{self.kind}"

    def expected(self, ws) -> Fields:
        return (self.model or model_fields)(ws)


def model_fields(ws) -> Fields:
    return {key: {"email": email, "first_name": first, "plan": plan}
            for key, email, first, plan in ws.sql("SELECT id, email, first_name, plan "
                                                  "FROM contacts")}


def by_email(ws, held: dict[str, dict]) -> Fields:
    """Records a vendor keeps by email, keyed by the model row that has that email (an
    email no row has keeps its own, so a stray record still shows)."""
    keys = dict(ws.sql("SELECT email, id FROM contacts"))
    return {keys.get(email, email): synced for email, synced in held.items()}


def fields(email, first_name, plan) -> dict[str, Any]:
    return {"email": email, "first_name": first_name, "plan": plan}


NOT_AN_EMAIL = "UPDATE contacts SET email = 'not-an-email-{key}' WHERE id = '{key}'"


# -- Customer.io and Segment: one protocol, two answers to a wrong key -----------------------

def segment_case(kind: str, env: str, rate: tuple[int, float], **more) -> Case:
    def serve(pace=None, **knobs):
        return build_segment_app(SegmentEmulator(write_keys={f"{kind}-key"}, flavor=kind,
                                                 rate_limit=pace or rate, **knobs))

    def read(emu, ws) -> Fields:
        # Deletes reach the vendor as "Contact Deleted" events; a profile with one is gone.
        state = emu.state()
        gone = {e["userId"] for e in state["events"] if e.get("event") == "Contact Deleted"}
        return {who: traits for who, traits in state["profiles"].items() if who not in gone}

    return Case(
        kind=kind,
        destination=f"""
            type: {kind}
            write_key: {{env: {env}}}
            base_url: {{url}}
        """,
        syncs=f"""
            contacts_to_{kind}:
              model: contacts
              destination: {kind}
              action: identify
              records: added_or_updated
            contacts_deleted:
              model: contacts
              destination: {kind}
              action: track
              records: deleted
              mapping:
                userId: userId
                event: {{value: "Contact Deleted"}}
        """,
        env=env, secret=f"{kind}-key", serve=serve, read=read,
        # Without a mapping every column is a trait: updated_at too, as an ISO timestamp.
        model=lambda ws: ws.model_rows(),
        first={"requests": 1, "messages_accepted": 300},
        # One request a sync: the insert and the update, then the two deletes as events.
        second={"requests": 2, "messages_accepted": 4, "duplicates": 0},
        refusal=Refusal(
            sql="UPDATE contacts SET email = 'bad@@example' WHERE id = '{key}'",
            faults={"poison": {"path": "traits.email", "value": "bad@@example"}},
            reason=r"HTTP 400 invalid_request: message refused by the destination",
            # The batch is refused whole: 1 + 2 records x 2 x 9 halvings of 300, at worst.
            requests=37,
            why="the tracking API validates no trait: the emulator's poison fault refuses "
                "the value"),
        peaks=lambda stats, knobs: [Peak(f"requests in {rate[1]:g} s",
                                         stats["max_requests_in_window"], rate[0])],
        **more,
    )


CUSTOMERIO = segment_case("customerio", "CIO_WRITE_KEY", (3000, 3.0))
SEGMENT = segment_case(
    "segment", "SEGMENT_WRITE_KEY", (1000, 1.0), refusal_counter="unauthorized",
    undetectable_credential=(
        "Segment answers 200 to any write key and drops the events of a wrong one, so retl "
        "cannot tell: the run succeeds, every record counts as delivered, Segment holds "
        "nothing, and `retl test-connection` says the key cannot be confirmed"))


# -- HubSpot ---------------------------------------------------------------------------------

def hubspot_read(emu, ws) -> Fields:
    return by_email(ws, {r["properties"]["email"]: fields(
        r["properties"]["email"], r["properties"].get("firstname"), r["properties"].get("plan"))
        for r in emu.records("contacts").values()})


HUBSPOT = Case(
    kind="hubspot",
    destination="""
        type: hubspot
        access_token: {env: HUBSPOT_TOKEN}
        base_url: {url}
    """,
    syncs="""
        contacts_to_hubspot:
          model: contacts
          destination: hubspot
          object: contacts
          action: mirror
          match: {email: email}
          mapping:
            firstname: first_name
            plan: plan
    """,
    env="HUBSPOT_TOKEN", secret="hs-contract-token",
    # A Free/Starter portal: 100 requests a rolling 10 s, retl's default requests_per_10s.
    serve=lambda pace=None, **knobs: build_hubspot_app(HubSpotEmulator(
        {"hs-contract-token"}, rate_limit=pace or (100, 10.0), **knobs)),
    read=hubspot_read,
    first={"requests": 3, "created": 300},
    # Upsert by email for the new row, update by id for the changed one, one batch archive.
    second={"requests": 3, "created": 1, "updated": 1, "archived": 2},
    refusal=Refusal(NOT_AN_EMAIL, r'HTTP 400: .*Email address not-an-email-{key} is invalid.*'
                                  r'"INVALID_EMAIL.*',
                    requests=31),  # a 400 refuses the batch: 3 + 2 x 2 x 7 halvings of 100
    peaks=lambda stats, knobs: [
        Peak("requests in 10 s", stats["max_requests_in_window"], (knobs["pace"] or (100,))[0]),
        Peak("searches a second", stats["max_searches_in_window"], 5, least=0)],
    rate=RateStory(requests=200),
)


# -- Salesforce ------------------------------------------------------------------------------

def salesforce_read(emu, ws) -> Fields:
    return {r["External_Id__c"]: fields(r.get("Email"), r.get("FirstName"), r.get("Plan__c"))
            for r in emu.records("Contact").values()}


def salesforce_peaks(stats, knobs) -> list[Peak]:
    return [Peak("requests in the rolling day", stats["max_requests_in_window"], 100_000),
            Peak("requests at once (retl's own 4, under the org's 25)",
                 stats["max_concurrent"], 4),
            Peak("requests refused: daily limit", stats["limit_exceeded"]["TotalRequests"], 0, 0),
            Peak("requests refused: concurrency",
                 stats["limit_exceeded"]["ConcurrentRequests"], 0, 0)]


SALESFORCE = Case(
    kind="salesforce",
    destination="""
        type: salesforce
        access_token: {env: SALESFORCE_TOKEN}
        instance_url: {url}
    """,
    columns=", 'Person ' || id AS last_name",  # a Contact needs a LastName
    syncs="""
        contacts_to_salesforce:
          model: contacts
          destination: salesforce
          object: Contact
          action: mirror
          match: {External_Id__c: userId}
          mapping:
            Email: email
            FirstName: first_name
            LastName: last_name
            Plan__c: plan
    """,
    env="SALESFORCE_TOKEN", secret="00D-contract-session",
    # An Enterprise org's published floor: 100,000 requests a rolling day, 25 long-running
    # requests at once.
    serve=lambda pace=None, **knobs: build_salesforce_app(SalesforceEmulator(
        {"00D-contract-session"}, daily_limit=100_000, concurrent_limit=25, **knobs)),
    read=salesforce_read,
    first={"requests": 2, "created": 300},
    second={"requests": 2, "created": 1, "updated": 1, "deleted": 2},
    # Per-record results: the two bad rows cost no split (one request per 200 records).
    refusal=Refusal(NOT_AN_EMAIL, r"INVALID_EMAIL_ADDRESS: Email: invalid email address: "
                                  r"not-an-email-{key} \[Email\]", requests=2),
    peaks=salesforce_peaks,
    # Over bulk_threshold (2,000) the changeset goes as one Bulk API 2.0 job (create, upload,
    # close, two polls, two result files), not 100 collection requests.
    rate=RateStory(requests=7),
    refused_says="INVALID_SESSION_ID",
)


# -- Braze -----------------------------------------------------------------------------------

BRAZE = Case(
    kind="braze",
    destination="""
        type: braze
        api_key: {env: BRAZE_API_KEY}
        base_url: {url}
    """,
    syncs="""
        contacts_to_braze:
          model: contacts
          destination: braze
          action: mirror
          match: {external_id: userId}
          mapping:
            email: email
            first_name: first_name
            plan: plan
    """,
    env="BRAZE_API_KEY", secret="braze-contract-key",
    serve=lambda pace=None, **knobs: build_braze_app(BrazeEmulator(
        {"braze-contract-key"}, rate_limit=pace or (3000, 3.0), **knobs)),  # as published
    read=lambda emu, ws: {uid: fields(a.get("email"), a.get("first_name"), a.get("plan"))
                          for uid, a in emu.records().items()},
    first={"requests": 4, "created": 300},  # 75 objects a request
    second={"requests": 2, "created": 1, "updated": 1, "deleted": 2},
    refusal=Refusal(NOT_AN_EMAIL, r"Invalid 'email' value: 'not-an-email-{key}' is not a "
                                  r"valid email address", requests=4),
    peaks=lambda stats, knobs: [
        Peak("/users/track requests in 3 s", stats["max_requests_in_window"], 3000),
        Peak("/users/delete requests a minute", stats["max_delete_requests_in_window"], 20_000,
             least=0)],
    rate=RateStory(requests=267),
)


# -- Iterable --------------------------------------------------------------------------------

def iterable_read(emu, ws) -> Fields:
    return by_email(ws, {email: fields(email, f.get("firstName"), f.get("plan"))
                         for email, f in emu.records().items()})


ITERABLE = Case(
    kind="iterable",
    destination="""
        type: iterable
        api_key: {env: ITERABLE_API_KEY}
        base_url: {url}
    """,
    syncs="""
        contacts_to_iterable:
          model: contacts
          destination: iterable
          action: mirror
          match: {email: email}
          mapping:
            firstName: first_name
            plan: plan
    """,
    env="ITERABLE_API_KEY", secret="iterable-contract-key",
    serve=lambda pace=None, **knobs: build_iterable_app(IterableEmulator(
        {"iterable-contract-key"}, **knobs)),  # Iterable's published per-endpoint limits
    read=iterable_read,
    first={"requests": 1, "created": 300},
    # One bulkUpdate for the add and the update, then one DELETE a user.
    second={"requests": 3, "created": 1, "updated": 1, "deleted": 2},
    refusal=Refusal(NOT_AN_EMAIL, r"invalidEmails: malformed email", requests=1),
    peaks=lambda stats, knobs: [
        Peak(f"{endpoint} requests a second", seen, ITERABLE_RATES[endpoint][0])
        for endpoint, seen in stats["max_requests_in_window_by_endpoint"].items()],
    rate=RateStory(requests=20),
)


# -- Mixpanel --------------------------------------------------------------------------------

def mixpanel_peaks(stats, knobs) -> list[Peak]:
    events = knobs.get("events_limit", MIXPANEL_EVENTS)
    peaks = [Peak(f"events in {events[1]:g} s", stats["max_events_in_window"], events[0])]
    if knobs.get("rate_limit"):
        peaks.append(Peak(f"requests in {knobs['rate_limit'][1]:g} s",
                          stats["max_requests_in_window"], knobs["rate_limit"][0]))
    return peaks


MIXPANEL = Case(
    kind="mixpanel",
    destination="""
        type: mixpanel
        project_token: {env: MIXPANEL_TOKEN}
        base_url: {url}
    """,
    syncs="""
        contacts_to_mixpanel:
          model: contacts
          destination: mixpanel
          action: mirror
          match: {distinct_id: userId}
          mapping:
            $email: email
            $first_name: first_name
            plan: plan
    """,
    env="MIXPANEL_TOKEN", secret="mp-contract-token",
    serve=lambda pace=None, **knobs: build_mixpanel_app(MixpanelEmulator(
        {"mp-contract-token"}, **knobs)),
    read=lambda emu, ws: {who: fields(p.get("$email"), p.get("$first_name"), p.get("plan"))
                          for who, p in emu.profiles().items()},
    first={"requests": 1, "profiles_created": 300},
    second={"requests": 2, "profiles_created": 1, "profiles_updated": 1, "profiles_deleted": 2,
            "updates_ignored": 0},
    refusal=Refusal(
        "UPDATE contacts SET email = 'refused@example.com' WHERE id = '{key}'",
        faults={"poison": {"path": "$set.$email", "value": "refused@example.com"}},
        destination="batch_size: 1",
        reason=r"/engage: update refused by the destination", requests=300,
        why="/engage names no update it refuses: among valid ones it drops it and answers 1 "
            "(the emulator as Mixpanel); alone in its request it is answered 0 with the "
            "reason. So the story sends one update a request, and the poison fault refuses "
            "the value (Mixpanel validates no profile property)"),
    peaks=mixpanel_peaks,
    rate=RateStory(
        destination="rate_limit_events: 10000\nrate_limit_seconds: 5.0\nbatch_size: 500",
        knobs={"events_limit": (10_000, 5.0), "rate_limit": (20, 5.0)}, requests=40,
        why="Mixpanel publishes ~30k events a second over a rolling minute, which 20,000 rows "
            "never reach; scaled to 10,000 events in 5 s (20 requests of 500) on both sides "
            "(rate_limit_events/_seconds and the emulator), the limiter really paces the run"),
)


# -- CleverTap -------------------------------------------------------------------------------

ACCOUNT = "TEST-4R6-Z98-876Z"

CLEVERTAP = Case(
    kind="clevertap",
    destination=f"""
        type: clevertap
        account_id: {ACCOUNT}
        passcode: {{env: CLEVERTAP_PASSCODE}}
        region: eu1
        base_url: {{url}}
    """,
    syncs="""
        contacts_to_clevertap:
          model: contacts
          destination: clevertap
          action: mirror
          match: {identity: userId}
          mapping:
            Email: email
            Name: first_name
            plan: plan
    """,
    env="CLEVERTAP_PASSCODE", secret="ct-contract-passcode",
    serve=lambda pace=None, **knobs: build_clevertap_app(CleverTapEmulator(
        {ACCOUNT: {"ct-contract-passcode"}}, **knobs)),
    read=lambda emu, ws: {who: fields(p.get("Email"), p.get("Name"), p.get("plan"))
                          for who, p in emu.profiles().items()},
    first={"requests": 1, "profiles_created": 300},
    second={"requests": 2, "profiles_created": 1, "profiles_updated": 1, "profiles_deleted": 2,
            "delete_requests": 1},
    refusal=Refusal(NOT_AN_EMAIL, r"515: Email invalid", requests=1),
    # CleverTap limits concurrency, not a time window: 15 requests in flight per account,
    # 3 of them deletes.
    peaks=lambda stats, knobs: [Peak("uploads in flight", stats["max_in_flight"], 15),
                                Peak("deletes in flight", stats["max_deletes_in_flight"], 3, 0)],
    rate=RateStory(
        # The project asks for 40 in flight; the destination holds it to 15. Latency keeps
        # the requests open, so more than one is in flight.
        destination="max_concurrency: 40\nbatch_size: 100", faults={"latency_ms": 30},
        requests=200),
)


# -- Clarify ---------------------------------------------------------------------------------

def clarify_serve(pace=None, **knobs):
    paces = {"rate_limit": pace, "delete_rate": pace} if pace else {}
    return build_clarify_app(ClarifyEmulator({"clarify-contract-key"}, workspace="acme",
                                             **paces, **knobs))


def clarify_read(emu, ws) -> Fields:
    out = {}
    for attrs in emu.records("person").values():
        [email] = attrs["email_addresses"]["items"]
        out[email] = fields(email, attrs["name"]["first_name"], attrs["plan"])
    return by_email(ws, out)


def clarify_peaks(stats, knobs) -> list[Peak]:
    pace = knobs["pace"]
    return [Peak("bulk requests a window", stats["max_requests_in_window"], (pace or (1,))[0]),
            Peak("deletes a window", stats["max_deletes_in_window"], (pace or (10,))[0], 0)]


CLARIFY = Case(
    kind="clarify",
    destination="""
        type: clarify
        api_key: {env: CLARIFY_API_KEY}
        workspace: acme
        base_url: {url}
    """,
    syncs="""
        contacts_to_clarify:
          model: contacts
          destination: clarify
          object: person
          action: mirror
          match: {email_addresses: email}
          mapping:
            name.first_name: first_name
            plan: plan
    """,
    env="CLARIFY_API_KEY", secret="clarify-contract-key",
    serve=clarify_serve, read=clarify_read,
    first={"requests": 12, "bulk_requests": 12, "created": 300},  # 25 people a request
    second={"requests": 3, "created": 1, "updated": 1, "deleted": 2},  # deletes one by one
    # A bulk is atomic (422): 12 bulks + 2 bad addresses x 2 x 5 halvings of 25, at worst.
    refusal=Refusal(NOT_AN_EMAIL, r"HTTP 422: Validation Error: 'not-an-email-{key}' is not a "
                                  r"valid email address "
                                  r"\(at /data/0/attributes/email_addresses/items/0\)",
                    requests=32),
    peaks=clarify_peaks,
    pace=(1, 0.01),
    pace_why=("Clarify's pace, one bulk request of 25 a second, would make the 20,000 rows "
              "take 800 s and the refusal story 30 s; one request a hundredth of a second, "
              "given to both sides, tests the same thing: never a second bulk inside the "
              "window, never more than 25 records in one. The first story keeps Clarify's "
              "own pace"),
    rate=RateStory(requests=800),  # 20,000 / 25, none refused
)


# -- Conversion ------------------------------------------------------------------------------

CONVERSION = Case(
    kind="conversion",
    destination="""
        type: conversion
        api_key: {env: CONVERSION_API_KEY}
        base_url: {url}
    """,
    syncs="""
        contacts_to_conversion:
          model: contacts
          destination: conversion
          action: mirror
          match: {userId: userId, email: email}
          mapping:
            first_name: first_name
            plan: plan
    """,
    env="CONVERSION_API_KEY", secret="sk_live_contract",
    serve=lambda pace=None, **knobs: build_conversion_app(ConversionEmulator(
        {"sk_live_contract"}, rate_limit=pace or (10, 1.0), **knobs)),  # v1's 10 a second
    read=lambda emu, ws: {c["userId"]: fields(email, c["fields"].get("first_name"),
                                              c["fields"].get("plan"))
                          for email, c in emu.contacts().items()},
    first={"requests": 1, "created": 300},
    second={"requests": 3, "created": 1, "updated": 1, "deleted": 2},  # deletes by email
    # Per-item results: the bad rows cost no split.
    refusal=Refusal(NOT_AN_EMAIL, r"invalid_email: 'not-an-email-{key}' is not a valid email "
                                  r"address", requests=1),
    peaks=lambda stats, knobs: [Peak("requests a second", stats["max_requests_in_window"], 10)],
    rate=RateStory(requests=20),  # 1,000 contacts a request: two windows' worth
)


# -- Webhook ---------------------------------------------------------------------------------

WEBHOOK = Case(
    kind="webhook",
    destination="""
        type: webhook
        url: {url}/hooks/retl
        secret: {env: WEBHOOK_SECRET}
        rate_limit: "20/1"          # the receiver's own limit: a webhook has no published one
    """,
    syncs="""
        contacts_to_webhook:
          model: contacts
          destination: webhook
          action: mirror
          mapping:
            email: email
            first_name: first_name
            plan: plan
    """,
    env="WEBHOOK_SECRET", secret="whsec-contract",
    # A receiver that requires an email and names a failed item by its index.
    serve=lambda pace=None, **knobs: build_webhook_app(WebhookEmulator(
        {"whsec-contract"}, rate_limit=(20, 1.0), required=["email"], error_key="index",
        **knobs)),
    read=lambda emu, ws: {key: fields(d.get("email"), d.get("first_name"), d.get("plan"))
                          for key, d in emu.records().items()},
    first={"requests": 3, "upserted": 300},  # 100 items a request
    second={"requests": 2, "upserted": 2, "deleted": 2, "duplicates": 0},
    refusal=Refusal("UPDATE contacts SET email = NULL WHERE id = '{key}'",
                    r"required field\(s\) missing: email", requests=3),
    peaks=lambda stats, knobs: [Peak("requests a second", stats["max_requests_in_window"], 20)],
    # 20,000 rows in batches of 200 are 100 requests: 5 s at 20 a second.
    rate=RateStory(destination="batch_size: 200", requests=100),
    refusal_counter="bad_signatures",
)


CASES: dict[str, Case] = {case.kind: case for case in (
    CUSTOMERIO, SEGMENT, HUBSPOT, SALESFORCE, BRAZE, ITERABLE, MIXPANEL, CLEVERTAP, CLARIFY,
    CONVERSION, WEBHOOK)}
