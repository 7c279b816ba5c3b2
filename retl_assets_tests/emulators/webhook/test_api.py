"""The webhook receiver emulator, driven over real HTTP with signed batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from retl_assets.destinations.webhook.writer import signature
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.webhook import WebhookEmulator, build_webhook_app

SECRET = "whsec-test"
Serve = Callable[..., tuple[httpx.Client, WebhookEmulator]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, httpx.Client]] = []

    def _serve(**args: Any) -> tuple[httpx.Client, WebhookEmulator]:
        args.setdefault("secrets", {SECRET})
        emulator = WebhookEmulator(**args)
        server = EmulatorServer(build_webhook_app(emulator)).start()
        client = httpx.Client(base_url=server.url, timeout=5)
        opened.append((server, client))
        return client, emulator

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def item(key: str, msgid: str | None = None, operation: str = "upsert",
         **data: Any) -> dict[str, Any]:
    return {"idempotency_key": msgid or f"m-{key}", "operation": operation, "key": key,
            "data": data}


def post(client: httpx.Client, items: list[dict[str, Any]], secret: str = SECRET,
         path: str = "/hooks/retl") -> httpx.Response:
    body = json.dumps({"batch": items, "sent_at": "2026-01-01T00:00:00.000Z"}).encode()
    return client.post(path, content=body, headers={
        "Content-Type": "application/json", "X-Retl-Signature": signature(secret, body)})


def test_the_signature_must_match_the_body(serve: Serve) -> None:
    client, emulator = serve()
    wrong = post(client, [item("a", email="a@x.io")], secret="other")
    assert wrong.status_code == 401 and "signature" in wrong.json()["error"]
    unsigned = client.post("/", json={"batch": [], "sent_at": "x"})
    assert unsigned.status_code == 401
    assert emulator.records() == {}
    assert emulator.state()["stats"]["bad_signatures"] == 2
    assert post(client, [], path="/").status_code == 200  # the credential check: empty batch


def test_upserts_store_by_key_deletes_remove_and_keys_dedup(serve: Serve) -> None:
    client, emulator = serve()
    first = post(client, [item("a", email="a@x.io"), item("b", email="b@x.io")])
    assert first.status_code == 200 and first.json() == {"received": 2}
    assert emulator.records() == {"a": {"email": "a@x.io"}, "b": {"email": "b@x.io"}}

    # A retried batch changes nothing; a new key for the same record updates it.
    post(client, [item("a", email="a@x.io")])
    post(client, [item("a", "m-a2", plan="pro"), item("b", "m-b-del", "delete")])
    assert emulator.records() == {"a": {"plan": "pro"}}
    stats = emulator.state()["stats"]
    assert (stats["upserted"], stats["deleted"], stats["duplicates"]) == (3, 1, 1)


def test_missing_required_fields_fail_alone_in_a_207(serve: Serve) -> None:
    client, emulator = serve(required=["email"])
    answer = post(client, [item("a", email="a@x.io"), item("b", plan="pro"),
                           item("c", "m-c", "delete")])
    assert answer.status_code == 207
    assert answer.json()["errors"] == [
        {"message": "required field(s) missing: email", "index": 1, "idempotency_key": "m-b"}]
    assert set(emulator.records()) == {"a"}
    # The failed key was not applied, so once fixed it is not taken for a duplicate.
    assert post(client, [item("b", email="b@x.io")]).status_code == 200
    assert set(emulator.records()) == {"a", "b"}


def test_errors_can_name_items_by_idempotency_key_only(serve: Serve) -> None:
    client, _ = serve(required=["email"], error_key="idempotency_key")
    errors = post(client, [item("b")]).json()["errors"]
    assert errors == [{"message": "required field(s) missing: email", "idempotency_key": "m-b"}]


def test_reject_invalid_batches_refuses_the_whole_batch(serve: Serve) -> None:
    client, emulator = serve(required=["email"])
    emulator.set_faults(reject_invalid_batches=True)
    answer = post(client, [item("a", email="a@x.io"), item("b")])
    assert answer.status_code == 422 and answer.json()["errors"][0]["index"] == 1
    assert emulator.records() == {}


def test_poison_refuses_the_record_carrying_it(serve: Serve) -> None:
    client, emulator = serve()
    emulator.set_faults(poison={"path": "data.email", "value": "bad@x.io"})
    answer = post(client, [item("a", email="bad@x.io"), item("b", email="b@x.io")])
    assert answer.status_code == 207 and answer.json()["errors"][0]["index"] == 0
    assert set(emulator.records()) == {"b"}


def test_malformed_envelopes_and_oversize_batches_are_refused(serve: Serve) -> None:
    client, emulator = serve(max_batch=2)
    assert post(client, [item("a"), item("b"), item("c")]).status_code == 413
    assert post(client, [{"key": "a", "operation": "upsert"}]).status_code == 400
    assert post(client, [item("a", operation="merge")]).status_code == 400
    body = b'{"batch": []}'  # no sent_at
    bare = client.post("/", content=body, headers={"X-Retl-Signature": signature(SECRET, body)})
    assert bare.status_code == 400
    assert len(emulator.state()["stats"]["contract_violations"]) == 4
    assert emulator.records() == {}


def test_rate_limit_answers_429_with_retry_after_and_counts_the_window(serve: Serve) -> None:
    client, emulator = serve(rate_limit=(3, 10.0))
    statuses = [post(client, []).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = post(client, [])
    assert float(limited.headers["Retry-After"]) > 0
    assert emulator.state()["stats"]["max_requests_in_window"] == 6


def test_faults_dead_and_server_errors(serve: Serve) -> None:
    client, emulator = serve()
    emulator.set_faults(dead=True)
    assert post(client, [item("a")]).status_code == 503
    emulator.set_faults(dead=False, error_rate=1.0)
    assert post(client, [item("a")]).status_code == 500
    emulator.set_faults(error_rate=0.0)
    assert post(client, [item("a")]).status_code == 200
    assert emulator.state()["stats"]["status"] == {"503": 1, "500": 1, "200": 1}
