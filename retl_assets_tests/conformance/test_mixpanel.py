"""Mixpanel's own library (`mixpanel` 5.4) against the Mixpanel emulator.

The library posts form bodies, `data=<json>&verbose=1&ip=0`, with one JSON object a call
(its BufferedConsumer sends arrays), and reads every answer as `{status: 1 | 0, error}`.
/import goes with a service account (Basic, `project_id` in the query) or a project API
secret (Basic user name); /engage carries the project token in each update.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from mixpanel import BufferedConsumer, Consumer, Mixpanel, MixpanelException
from mixpanel import ServiceAccountCredentials as Account

from retl_assets.emulators.mixpanel import MixpanelEmulator, build_mixpanel_app
from retl_assets_tests.conformance.serving import served

pytestmark = pytest.mark.timeout(60)

TOKEN, SA, SA_SECRET, API_SECRET, PROJECT = "tok-1", "sa.user", "sa-secret", "api-sec", "42"


@pytest.fixture
def mixpanel() -> Iterator[tuple[MixpanelEmulator, str]]:
    emulator = MixpanelEmulator({TOKEN}, service_accounts={SA: SA_SECRET}, project_id=PROJECT,
                                api_secrets={API_SECRET})
    with served(build_mixpanel_app(emulator)) as url:
        yield emulator, url


def urls(url: str) -> dict[str, Any]:
    """The library's endpoints on the emulator; no retries (its retries only cover https)."""
    return {"people_url": f"{url}/engage", "import_url": f"{url}/import",
            "request_timeout": 5, "retry_limit": 0}


def client(url: str, token: str = TOKEN, account: Account | None = None) -> Mixpanel:
    return Mixpanel(token, consumer=Consumer(**urls(url), credentials=account))


def recent() -> int:
    return int(time.time()) - 60


def test_every_profile_call_lands(mixpanel) -> None:
    emulator, url = mixpanel
    mp = client(url)
    mp.people_set("u1", {"plan": "pro", "name": "Ann"})
    mp.people_set_once("u1", {"plan": "free", "first_seen": "2026-01-01"})
    mp.people_increment("u1", {"logins": 2})
    mp.people_append("u1", {"steps": "signup"})
    mp.people_union("u1", {"tags": ["a", "b"]})
    mp.people_remove("u1", {"tags": "a"})
    mp.people_unset("u1", ["name"])

    assert emulator.profiles() == {"u1": {"plan": "pro", "first_seen": "2026-01-01",
                                          "logins": 2, "steps": ["signup"], "tags": ["b"]}}
    mp.people_delete("u1")
    assert emulator.profiles() == {}
    assert emulator.state()["stats"]["contract_violations"] == []


def test_import_with_a_service_account(mixpanel) -> None:
    emulator, url = mixpanel
    when = recent()
    client(url, account=Account(SA, SA_SECRET, PROJECT)).import_data(
        None, "u1", "Signed Up", when, {"plan": "pro"})

    [event] = emulator.events()
    assert event["event"] == "Signed Up"
    props = event["properties"]
    assert (props["distinct_id"], props["time"], props["plan"]) == ("u1", when, "pro")
    assert props["token"] == TOKEN and props["$insert_id"]


def test_import_with_the_legacy_api_secret(mixpanel) -> None:
    emulator, url = mixpanel
    client(url).import_data(None, "u2", "Upgraded", recent(), api_secret=API_SECRET)
    assert [e["properties"]["distinct_id"] for e in emulator.events()] == ["u2"]


@pytest.mark.parametrize("account, secret", [
    (None, None),  # no credentials at all
    (Account(SA, "wrong", PROJECT), None),
    (Account(SA, SA_SECRET, "7"), None),  # a project the account cannot reach
    (None, "wrong-secret"),
])
def test_import_without_good_credentials_is_refused(mixpanel, account, secret) -> None:
    emulator, url = mixpanel
    with pytest.raises(MixpanelException, match="Invalid credentials"):
        client(url, account=account).import_data(None, "u1", "Signed Up", recent(),
                                                 api_secret=secret)
    assert emulator.events() == []


def test_import_deduplicates_by_insert_id(mixpanel) -> None:
    emulator, url = mixpanel
    mp, when = client(url, account=Account(SA, SA_SECRET, PROJECT)), recent()
    for _ in range(2):
        mp.import_data(None, "u1", "Signed Up", when, {"$insert_id": "ins-1"})

    assert len(emulator.events()) == 1
    assert emulator.state()["stats"]["duplicates"] == 1


def test_the_buffered_consumer_sends_arrays(mixpanel) -> None:
    emulator, url = mixpanel
    consumer = BufferedConsumer(max_size=50, credentials=Account(SA, SA_SECRET, PROJECT),
                                **urls(url))
    mp = Mixpanel(TOKEN, consumer=consumer)
    for i in range(3):
        mp.people_set(f"u{i}", {"n": i})
        mp.import_data(None, f"u{i}", "Seen", recent())
    consumer.flush()

    assert emulator.profiles() == {"u0": {"n": 0}, "u1": {"n": 1}, "u2": {"n": 2}}
    assert len(emulator.events()) == 3
    assert emulator.state()["stats"]["requests"] == 2  # one array per endpoint


def test_an_unknown_token_is_an_error_the_library_reads(mixpanel) -> None:
    emulator, url = mixpanel
    with pytest.raises(MixpanelException, match="Invalid project token"):
        client(url, token="not-the-token").people_set("u1", {"plan": "pro"})
    assert emulator.profiles() == {}


def test_an_invalid_update_answers_status_0_with_the_reason(mixpanel) -> None:
    emulator, url = mixpanel
    with pytest.raises(MixpanelException, match=r"\$distinct_id, missing or empty"):
        client(url).people_set("", {"plan": "pro"})
    assert emulator.profiles() == {}


def test_a_rate_limit_answer_is_one_the_library_reads(mixpanel) -> None:
    emulator, url = mixpanel
    emulator.set_faults(rate_429=1.0)
    with pytest.raises(MixpanelException, match="exceeded rate limits"):
        client(url).people_set("u1", {"plan": "pro"})
    assert emulator.profiles() == {}
