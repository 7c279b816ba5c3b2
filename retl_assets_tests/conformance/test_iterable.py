"""The Iterable emulator against Iterable's official Node library, @iterable/api.

The library (Iterable/api-client) validates every answer with its own zod schemas and
turns error bodies into IterableApiError only when they have Iterable's `{msg, code,
params}` shape, so an emulator answer it cannot read shows up here as a failed call. Every
call retl's Iterable writer makes is driven: users/bulkUpdate, events/trackBulk, the two
user deletes and GET /api/channels (the connection check), plus users/update. retl's own
requests are then held against the library's request schemas and paths.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.destinations.base import Record
from retl_assets.destinations.iterable.writer import BASE_URLS, IterableDestination
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.iterable import IterableEmulator, build_iterable_app
from retl_assets.project.schema import SyncConfig
from retl_assets_tests.conformance.node_runner import Recorder, require, run

KEY = "conformance-iterable-key"


@pytest.fixture
def node() -> str:
    return require("@iterable/api")


Serve = Callable[..., tuple[IterableEmulator, str, Recorder]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start an emulator on loopback: (emulator, base URL, recorder of its requests)."""
    servers: list[EmulatorServer] = []

    def _serve(**args: Any) -> tuple[IterableEmulator, str, Recorder]:
        args.setdefault("api_keys", {KEY})
        emulator = IterableEmulator(**args)
        recorder = Recorder(build_iterable_app(emulator))
        server = EmulatorServer(recorder).start()
        servers.append(server)
        return emulator, server.url, recorder

    yield _serve
    for server in servers:
        server.stop()


def drive(node: str, url: str, *calls: dict[str, Any], key: str = KEY) -> list[dict]:
    """Run `calls` through the library; one result per call."""
    out = run(node, "iterable.mjs", ["--base-url", url, "--api-key", key], list(calls))
    assert len(out["results"]) == len(calls), out
    return out["results"]


def call(method: str, args: Any = None) -> dict[str, Any]:
    return {"method": method, "args": args} if args is not None else {"method": method}


def ok(result: dict) -> Any:
    assert result["ok"], result
    return result["value"]


def error(result: dict) -> dict:
    assert not result["ok"], result
    return result["error"]


def pairs(emulator: IterableEmulator) -> list[tuple[str | None, str | None]]:
    return [(u["email"], u["userId"]) for u in emulator.users()]


# -- auth, base URL, the connection check -------------------------------------------------------

def test_the_library_and_retl_agree_on_host_and_auth_header(node: str, serve: Serve) -> None:
    defaults = run(node, "iterable.mjs", ["--defaults"], [])
    assert defaults["baseUrl"] == BASE_URLS["us"]  # the library has no EU option
    _, url, recorder = serve()
    out = run(node, "iterable.mjs", ["--base-url", url, "--api-key", KEY],
              [call("getChannels")])
    channels = ok(out["results"][0])["channels"]
    assert channels and {"id", "name", "channelType", "messageMedium"} <= set(channels[0])
    # retl's writer names the key header as the library does.
    retl_headers = IterableDestination("it", KEY, base_url=url)._headers
    assert "Api-Key" in out["library"]["headerNames"] and "Api-Key" in retl_headers
    [sent] = recorder.api()
    assert sent["headers"]["api-key"] == KEY


def test_a_wrong_key_is_an_iterable_api_error_the_library_can_read(node: str,
                                                                    serve: Serve) -> None:
    emulator, url, _ = serve()
    [channels, bulk] = drive(node, url, call("getChannels"),
                             call("bulkUpdateUsers", {"users": [{"email": "a@x.io"}]}),
                             key="wrong")
    for failed in (error(channels), error(bulk)):
        # IterableApiError, not IterableRawError: the body matched {msg, code, params}.
        assert failed["name"] == "IterableApiError"
        assert (failed["statusCode"], failed["code"]) == (401, "BadApiKey")
        assert "wrong" not in json.dumps(failed)
    assert emulator.users() == []


# -- users/bulkUpdate ---------------------------------------------------------------------------

def test_bulk_update_counts_and_failures_read_by_the_library(node: str, serve: Serve) -> None:
    emulator, url, _ = serve()
    first, second = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [
            {"email": "Ada@x.io", "dataFields": {"plan": "pro", "seats": 3}},
            {"userId": "u-2", "dataFields": {"plan": "free"}},
            {"email": "not-an-email", "dataFields": {"plan": "pro"}}]}),
        call("bulkUpdateUsers", {"users": [
            {"email": "ada@x.io", "dataFields": {"seats": "many"}},  # a field's type is fixed
            {"email": "ada@x.io", "dataFields": {"team": {"a": 1}}, "mergeNestedObjects": True}]}))
    value = ok(first)
    assert (value["successCount"], value["failCount"]) == (2, 1)
    assert value["failedUpdates"]["invalidEmails"] == ["not-an-email"] == value["invalidEmails"]
    assert set(value["createdFields"]) == {"plan", "seats"}
    value = ok(second)
    assert (value["successCount"], value["failCount"]) == (1, 1)
    assert emulator.records() == {"ada@x.io": {"plan": "pro", "seats": 3, "team": {"a": 1}},
                                  "u-2": {"plan": "free"}}


@pytest.mark.parametrize("project_type", ["email", "hybrid"])
def test_a_user_with_email_and_user_id_is_found_by_email_and_gets_the_user_id(
        node: str, serve: Serve, project_type: str) -> None:
    # "If both fields are present, email is prioritized to identify the user, and the userId
    # field is updated/overwritten" (Iterable, "Creating and Identifying Users with Iterable
    # APIs"). The emulator used to answer 400 to any user carrying both.
    emulator, url, _ = serve(project_type=project_type)
    results = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [{"email": "a@x.io", "userId": "u1",
                                            "dataFields": {"plan": "free"}}]}),
        call("bulkUpdateUsers", {"users": [{"email": "A@x.io", "userId": "u1b",
                                            "dataFields": {"plan": "pro"}}]}),
        call("updateUser", {"email": "b@x.io", "userId": "u2", "dataFields": {"plan": "free"}}),
        call("trackBulkEvents", {"events": [{"email": "a@x.io", "userId": "u1b",
                                             "eventName": "Upgraded", "id": "e1"}]}))
    assert [ok(r).get("successCount") for r in results] == [1, 1, None, 1]
    assert ok(results[2])["code"] == "Success"
    assert pairs(emulator) == [("a@x.io", "u1b"), ("b@x.io", "u2")]
    assert emulator.records()["a@x.io"] == {"plan": "pro"}
    assert [e["eventName"] for e in emulator.events()] == ["Upgraded"]
    assert emulator.state()["stats"]["contract_violations"] == []


def test_a_malformed_identifier_in_data_fields_is_listed_under_its_own_key(
        node: str, serve: Serve) -> None:
    # FailedUserUpdates: invalidUserIds holds "Malformed userId values ... found either at the
    # top level of a passed-in user object, or in dataFields" (invalidEmails likewise), and
    # invalidData* covers "invalid data in dataFields other than an invalid email or userId".
    # So a bad userId beside an email is listed by that userId, not by the email.
    emulator, url, _ = serve(project_type="email")
    users = [{"email": "a@x.io", "dataFields": {"userId": "bad id ", "plan": "pro"}},
             {"email": "b@x.io", "dataFields": {"userId": "u2", "plan": "pro"}},
             {"userId": "u3", "preferUserId": True, "dataFields": {"email": "not-an-email"}}]
    number = {"email": "c@x.io", "dataFields": {"userId": 7}}  # Iterable's userId is a string
    answer, typed = drive(node, url, call("bulkUpdateUsers", {"users": users}),
                          call("bulkUpdateUsers", {"users": [number]}))
    value = ok(answer)  # as the library reads it (its schema keeps invalidEmails/UserIds)
    assert (value["successCount"], value["failCount"]) == (1, 2)
    assert value["failedUpdates"]["invalidUserIds"] == ["bad id "] == value["invalidUserIds"]
    assert value["failedUpdates"]["invalidEmails"] == ["not-an-email"]
    assert ok(typed)["failedUpdates"]["invalidUserIds"] == ["7"]
    assert pairs(emulator) == [("b@x.io", "u2")]
    # retl maps each back to its row by the value in dataFields, whichever it matches on.
    for match, rows, expected in (
            ("email", users[:2], {0: "invalidUserIds: malformed userId"}),
            ("userId", users[2:], {0: "invalidEmails: malformed email"})):
        writer = IterableDestination("it", KEY, base_url=url).writer("users", SyncConfig(
            model="contacts", destination="it", action="upsert", match={match: match}))
        records = [Record(f"m{i}", f"k{i}", json.dumps(u), "bulkUpdate")
                   for i, u in enumerate(rows)]
        read = writer.read(httpx.Response(200, json=value), "bulkUpdate", records)
        assert read.rejected == expected


def test_email_based_projects_do_not_enforce_user_id_uniqueness(node: str, serve: Serve) -> None:
    emulator, url, _ = serve(project_type="email")
    results = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [{"email": "a@x.io", "userId": "shared"},
                                           {"email": "b@x.io", "userId": "shared"}]}),
        # A userId alone creates a user only with preferUserId (a placeholder email).
        call("bulkUpdateUsers", {"users": [{"userId": "new", "preferUserId": True}]}),
        call("updateUser", {"userId": "unknown"}),
        call("trackBulkEvents", {"events": [{"email": "c@x.io", "eventName": "E"}]}))
    assert ok(results[0])["successCount"] == 2 and ok(results[1])["successCount"] == 1
    failed = error(results[2])  # no preferUserId, no such user
    assert (failed["name"], failed["statusCode"]) == ("IterableApiError", 400)
    assert ok(results[3])["failCount"] == 1  # events do not create users here
    users = pairs(emulator)
    assert users[:2] == [("a@x.io", "shared"), ("b@x.io", "shared")]
    assert users[2][1] == "new" and users[2][0].endswith("@placeholder.email")


def test_user_id_based_projects_find_users_by_user_id_and_update_the_email(
        node: str, serve: Serve) -> None:
    emulator, url, _ = serve(project_type="userId")
    results = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [{"userId": "u1", "email": "a@x.io"}]}),
        call("bulkUpdateUsers", {"users": [{"userId": "u1", "email": "new@x.io",
                                            "dataFields": {"plan": "pro"}},
                                           {"userId": "u2", "email": "new@x.io"}]}),
        call("updateUser", {"email": "new@x.io", "dataFields": {"plan": "free"}}))
    assert ok(results[0])["successCount"] == 1 and ok(results[1])["successCount"] == 2
    alone = error(results[2])  # an email alone identifies nobody in a userID-based project
    assert (alone["statusCode"], alone["code"]) == (400, "BadParams")
    assert pairs(emulator) == [("new@x.io", "u1"), ("new@x.io", "u2")]
    assert [u["dataFields"] for u in emulator.users()] == [{"plan": "pro"}, {}]


def test_hybrid_projects_refuse_an_identity_another_user_holds(node: str, serve: Serve) -> None:
    emulator, url, _ = serve()  # hybrid: email and userId both unique
    results = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [{"email": "a@x.io", "userId": "u1"},
                                           {"email": "b@x.io"}]}),
        call("bulkUpdateUsers", {"users": [{"email": "b@x.io", "userId": "u1"}]}),
        call("updateUser", {"email": "b@x.io", "userId": "u1"}))
    assert ok(results[1])["failCount"] == 1
    conflict = error(results[2])
    assert (conflict["statusCode"], conflict["code"]) == (409, "UserIdAlreadyExists")
    assert pairs(emulator) == [("a@x.io", "u1"), ("b@x.io", None)]


# -- users/update -------------------------------------------------------------------------------

def test_update_user_answers_success_or_a_typed_error(node: str, serve: Serve) -> None:
    emulator, url, _ = serve()
    emulator.forget("gone@x.io")
    created, merged, bad, forgotten, typed = drive(
        node, url,
        call("updateUser", {"email": "a@x.io", "dataFields": {"plan": "pro", "n": 1}}),
        call("updateUser", {"email": "a@x.io", "dataFields": {"plan": "enterprise"}}),
        call("updateUser", {"email": "not-an-email", "dataFields": {}}),
        call("updateUser", {"email": "gone@x.io", "dataFields": {}}),
        call("updateUser", {"email": "a@x.io", "dataFields": {"n": "one"}}))
    assert ok(created) == {"msg": "User successfully created/updated.", "code": "Success",
                           "params": None}
    assert ok(merged)["code"] == "Success"
    assert [(e["statusCode"], e["code"]) for e in map(error, (bad, forgotten, typed))] == [
        (400, "InvalidEmailAddressError"), (409, "ForgottenUserError"),
        (400, "RequestFieldsTypesMismatched")]
    assert emulator.records() == {"a@x.io": {"plan": "enterprise", "n": 1}}


# -- events/trackBulk ---------------------------------------------------------------------------

def test_track_bulk_upserts_by_id_and_reports_what_it_refused(node: str, serve: Serve) -> None:
    emulator, url, _ = serve(disallowed_event_names={"Banned"})
    event = {"email": "a@x.io", "eventName": "Upgraded", "id": "e1", "createdAt": 1767261600,
             "dataFields": {"plan": "pro"}}
    [answer] = drive(node, url, call("trackBulkEvents", {"events": [
        event, {**event, "dataFields": {"plan": "enterprise"}},
        {"userId": "u1", "eventName": "Opened"},
        {"email": "bad", "eventName": "Upgraded"},
        {"userId": "u1", "eventName": "Banned"}]}))
    value = ok(answer)
    assert (value["successCount"], value["failCount"]) == (3, 2)
    assert value["disallowedEventNames"] == ["Banned"]
    assert value["failedUpdates"]["invalidEmails"] == ["bad"]
    events = {e["id"]: e for e in emulator.events()}
    assert events["e1"]["dataFields"] == {"plan": "enterprise"}  # the id is an upsert key
    assert events["e1"]["createdAt"] == 1767261600
    assert sorted(e["eventName"] for e in events.values()) == ["Opened", "Upgraded"]


# -- deletes ------------------------------------------------------------------------------------

def test_deletes_by_email_and_user_id_with_the_librarys_path_encoding(node: str,
                                                                     serve: Serve) -> None:
    emulator, url, recorder = serve()
    results = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [{"email": "a+tag@x.io"}, {"userId": "u/2 x"},
                                           {"email": "keep@x.io"}]}),
        call("deleteUserByEmail", {"email": "a+tag@x.io"}),
        call("deleteUserByUserId", {"userId": "u/2 x"}),
        call("deleteUserByEmail", {"email": "nobody@x.io"}))  # asynchronous: no 404
    assert [ok(r).get("code") for r in results[1:]] == ["Success"] * 3
    assert set(emulator.records()) == {"keep@x.io"}
    deletes = [(r["method"], r["path"]) for r in recorder.api() if r["method"] == "DELETE"]
    assert deletes == [("DELETE", "/api/users/a+tag@x.io"),
                       ("DELETE", "/api/users/byUserId/u/2 x"),
                       ("DELETE", "/api/users/nobody@x.io")]


# -- error shapes -------------------------------------------------------------------------------

def test_every_refusal_parses_as_an_iterable_api_error(node: str, serve: Serve) -> None:
    emulator, url, _ = serve()
    one = {"email": "a@x.io"}
    results = drive(
        node, url,
        call("bulkUpdateUsers", {"users": [{"email": f"u{i}@x.io"} for i in range(1001)]}),
        call("bulkUpdateUsers", {"users": [{"dataFields": {}}]}),
        call("trackBulkEvents", {"events": [{"email": "a@x.io", "eventName": "E",
                                             "createdAt": "2026-01-01"}]}),
        *[call("bulkUpdateUsers", {"users": [one]}) for _ in range(4)])
    # 3 refused 400s and 4 accepted: the window holds 5 bulkUpdate calls a second.
    assert [(e["name"], e["statusCode"], e["code"]) for e in map(error, results[:3])] == [
        ("IterableApiError", 400, "BatchTooLarge"), ("IterableApiError", 400, "BadParams"),
        ("IterableApiError", 400, "BadParams")]
    assert [ok(r)["successCount"] for r in results[4:6]] == [1, 1]
    limited = error(results[6])
    assert (limited["name"], limited["statusCode"], limited["code"]) == (
        "IterableApiError", 429, "RateLimitExceeded")
    emulator.set_faults(error_rate=1.0)
    [broken] = drive(node, url, call("getChannels"))
    assert (error(broken)["name"], error(broken)["statusCode"], error(broken)["code"]) == (
        "IterableApiError", 500, "GenericError")
    emulator.set_faults(error_rate=0.0, dead=True)
    [dead] = drive(node, url, call("getChannels"))
    assert (error(dead)["statusCode"], error(dead)["code"]) == (503, "GenericError")


# -- retl's own requests, held against the library's ---------------------------------------------

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  iterable:
    type: iterable
    api_key: {{env: ITERABLE_API_KEY}}
    base_url: {url}
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: SELECT id AS "userId", email, first_name, plan FROM contacts
  events:
    source: warehouse
    primary_key: event_id
    sql: |
      SELECT e.id AS event_id, c.email, c.id AS user_id, e.name, e.occurred_at
      FROM events e JOIN contacts c ON c.id = e.contact_id
syncs:
  users:
    model: contacts
    destination: iterable
    action: mirror
    match: {{{match}}}
    mapping:
      {other}
      firstName: first_name
      plan: plan
  activity:
    model: events
    destination: iterable
    action: track
    match: {{{event_match}}}
    mapping:
      eventName: name
      createdAt: occurred_at
"""


def sync_through(workspace, serve: Serve, monkeypatch, project_type: str, match: str,
                 other: str, event_match: str) -> tuple[IterableEmulator, Recorder, str]:
    monkeypatch.setenv("ITERABLE_API_KEY", KEY)
    emulator, url, recorder = serve(project_type=project_type)
    workspace.write(PROJECT.format(url=url, match=match, other=other, event_match=event_match))
    for model in ("contacts", "events"):
        run_ = workspace.sync(model)
        assert run_.status == "success", run_.errors
        assert all(s["owed"] == 0 for s in run_.syncs.values()), run_.syncs
    return emulator, recorder, url


def check_bodies_with_the_library(node: str, url: str, recorder: Recorder) -> None:
    """Every bulk body retl sent passes the library's request schema; every request names
    the key in the header the library uses."""
    checks = []
    for sent in recorder.api():
        assert sent["headers"].get("api-key") == KEY
        if sent["path"].endswith("/bulkUpdate"):
            checks.append({"schema": "BulkUpdateUsersParamsSchema",
                           "value": json.loads(sent["body"])})
        elif sent["path"].endswith("/trackBulk"):
            checks.append({"schema": "TrackBulkEventsParamsSchema",
                           "value": json.loads(sent["body"])})
    assert {c["schema"] for c in checks} == {"BulkUpdateUsersParamsSchema",
                                            "TrackBulkEventsParamsSchema"}
    for result in drive(node, url, *checks):
        ok(result)


def test_retl_matched_by_email_sends_the_user_id_the_library_way(node: str, serve: Serve,
                                                                 workspace, monkeypatch) -> None:
    # retl's one-identifier rule keeps only the matched identifier on top and puts the other
    # in dataFields, which is how Iterable documents setting a userId in an email-based
    # project ("Updating a User's Email Address or User ID"): no row carrying both is refused.
    emulator, recorder, url = sync_through(
        workspace, serve, monkeypatch, "email", "email: email", "userId: userId",
        "email: email")
    model = dict(workspace.sql("SELECT email, id FROM contacts"))
    assert {u["email"]: u["userId"] for u in emulator.users()} == model
    assert len(emulator.events()) == 50
    check_bodies_with_the_library(node, url, recorder)
    # retl's delete names the user on the path the library uses.
    gone = workspace.sql("SELECT email FROM contacts ORDER BY id LIMIT 1")[0][0]
    workspace.sql(f"DELETE FROM contacts WHERE email = '{gone}'")
    assert workspace.sync("contacts").status == "success"
    retl_delete = [(r["method"], r["path"]) for r in recorder.api() if r["method"] == "DELETE"]
    drive(node, url, call("deleteUserByEmail", {"email": gone}))
    library_delete = [(r["method"], r["path"]) for r in recorder.api()
                      if r["method"] == "DELETE"][len(retl_delete):]
    assert retl_delete == library_delete == [("DELETE", f"/api/users/{gone}")]
    assert gone not in emulator.records()


def test_retl_matched_by_user_id_sends_the_email_the_library_way(node: str, serve: Serve,
                                                                 workspace, monkeypatch) -> None:
    emulator, recorder, url = sync_through(
        workspace, serve, monkeypatch, "userId", "userId: userId", "email: email",
        "userId: user_id")
    model = dict(workspace.sql("SELECT id, email FROM contacts"))
    assert {u["userId"]: u["email"] for u in emulator.users()} == model
    assert {e["userId"] for e in emulator.events()} <= set(model)
    check_bodies_with_the_library(node, url, recorder)
    gone = workspace.sql("SELECT id FROM contacts ORDER BY id LIMIT 1")[0][0]
    workspace.sql(f"DELETE FROM contacts WHERE id = '{gone}'")
    assert workspace.sync("contacts").status == "success"
    retl_delete = [(r["method"], r["path"]) for r in recorder.api() if r["method"] == "DELETE"]
    drive(node, url, call("deleteUserByUserId", {"userId": gone}))
    library_delete = [(r["method"], r["path"]) for r in recorder.api()
                      if r["method"] == "DELETE"][len(retl_delete):]
    assert retl_delete == library_delete == [("DELETE", f"/api/users/byUserId/{gone}")]
    assert gone not in {u["userId"] for u in emulator.users()}


def test_retl_matched_by_user_id_creates_users_in_an_email_based_project(
        node: str, serve: Serve, workspace, monkeypatch) -> None:
    # "If only userId is passed (and not email), and there is no matching user, Iterable
    # returns an error. To avoid this ... include the parameter preferUserId with a value of
    # true" ("Creating and Identifying Users with Iterable APIs"); the spec: "Only respected
    # in API calls for email-based projects". retl sends it on every userId-matched user.
    emulator, recorder, url = sync_through(
        workspace, serve, monkeypatch, "email", "userId: userId", "", "userId: user_id")
    ids = {row[0] for row in workspace.sql("SELECT id FROM contacts")}
    assert {u["userId"] for u in emulator.users()} == ids
    assert all(u["email"].endswith("@placeholder.email") for u in emulator.users())
    bodies = [json.loads(r["body"]) for r in recorder.api() if r["path"].endswith("/bulkUpdate")]
    assert bodies and all(u["preferUserId"] is True and isinstance(u["userId"], str)
                          for b in bodies for u in b["users"])
    check_bodies_with_the_library(node, url, recorder)
    # The library sends the flag as given: retl's bodies create the same users through it.
    fresh, fresh_url, _ = serve(project_type="email")
    for result in drive(node, fresh_url, *[call("bulkUpdateUsers", b) for b in bodies]):
        assert ok(result)["failCount"] == 0
    assert {u["userId"] for u in fresh.users()} == ids
