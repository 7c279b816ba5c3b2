"""A signed webhook as a user sets it up: contacts mirrored to their own HTTPS endpoint."""

from __future__ import annotations

import duckdb
import httpx
import pytest

from retl_assets.destinations import open_destination
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.webhook import WebhookEmulator, build_webhook_app

SECRET = "whsec-e2e"
TENANT = "acme"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  hook:
    type: webhook
    url: {url}/hooks/retl            # https:// in production; http:// only for localhost
    secret: {{env: WEBHOOK_SECRET}}   # signs each body: X-Retl-Signature: sha256=<hmac>
    headers:
      X-Tenant: {{env: WEBHOOK_TENANT}}
    batch_size: {batch_size}
    rate_limit: "20/1"                 # the receiver's own limit, if it has one
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts
syncs:
  contacts_to_hook:
    model: contacts
    destination: hook
    action: mirror                   # added/updated as upsert, deleted as delete
    mapping:
      email: email
      first_name: first_name
      plan: plan
"""


@pytest.fixture
def serve(workspace, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("WEBHOOK_TENANT", TENANT)
    servers = []

    def _serve(batch_size: int = 100, **args) -> WebhookEmulator:
        emu = WebhookEmulator({SECRET}, headers={"X-Tenant": TENANT}, rate_limit=(20, 1.0),
                              **args)
        server = EmulatorServer(build_webhook_app(emu)).start()
        servers.append(server)
        workspace.write(PROJECT.format(url=server.url, batch_size=batch_size))
        return emu

    yield _serve
    for server in servers:
        server.stop()


def received(emu: WebhookEmulator) -> dict[str, dict]:
    return emu.records()


def model_contacts(ws) -> dict[str, dict]:
    rows = ws.sql("SELECT id, email, first_name, plan FROM contacts")
    return {key: {"email": email, "first_name": first, "plan": plan}
            for key, email, first, plan in rows}


def owed_errors(ws, sync: str) -> dict[str, str]:
    store = ws.store
    ledger = store.ledger_path(sync, store.sync_state(sync))
    return dict(duckdb.sql(f"SELECT \"userId\", __retl_error FROM read_parquet('{ledger}')")
                .fetchall())


def test_mirror_delivers_every_row_then_exactly_the_changes(workspace, serve):
    hook = serve()
    check = open_destination(workspace.project, "hook")
    with httpx.Client() as client:  # test-connection: an empty signed batch
        assert client.send(check.check_request(client)).status_code == 200
    assert received(hook) == {}

    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.syncs["contacts_to_hook"]["succeeded"] == 300
    assert received(hook) == model_contacts(workspace)

    workspace.sql("""
        INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1, now());
        UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
        DELETE FROM contacts WHERE id IN ('u000020', 'u000021');
    """)
    before = hook.state()["stats"]
    second = workspace.sync()
    s = second.syncs["contacts_to_hook"]
    assert second.status == "success", second.errors
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (4, 4, 0, 0)
    assert received(hook) == model_contacts(workspace)
    after = hook.state()["stats"]
    assert (after["upserted"] - before["upserted"], after["deleted"] - before["deleted"]) == (2, 2)
    assert after["duplicates"] == 0 and after["contract_violations"] == []


@pytest.mark.parametrize("error_key", ["index", "idempotency_key"])
def test_items_the_receiver_refuses_fail_alone_and_land_once_fixed(workspace, serve, error_key):
    hook = serve(required=["email"], error_key=error_key)
    workspace.sql("UPDATE contacts SET email = NULL WHERE id IN ('u000005', 'u000050')")
    run = workspace.sync()
    s = run.syncs["contacts_to_hook"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["failed"], s["owed"]) == (298, 2, 2)
    assert len(received(hook)) == 298
    owed = owed_errors(workspace, "contacts_to_hook")
    assert set(owed) == {"u000005", "u000050"}
    assert all(e == "rejected: required field(s) missing: email" for e in owed.values()), owed

    workspace.sql("UPDATE contacts SET email = 'fixed' || id || '@example.com' "
                  "WHERE id IN ('u000005', 'u000050')")
    fixed = workspace.sync()
    assert fixed.syncs["contacts_to_hook"]["owed"] == 0
    assert received(hook) == model_contacts(workspace)


def test_twenty_thousand_rows_stay_under_the_receivers_rate_limit(workspace, serve):
    # 20,000 rows in batches of 200 are 100 requests: 5 s at the 20 a second both sides use.
    hook = serve(batch_size=200)
    workspace.add_bulk_contacts()
    run = workspace.sync()
    s = run.syncs["contacts_to_hook"]
    assert run.status == "success", run.errors
    assert (s["succeeded"], s["owed"]) == (20000, 0)
    stats = hook.state()["stats"]
    assert stats["max_requests_in_window"] <= 20
    assert stats["status"].get("429", 0) == 0
    assert len(received(hook)) == 20000


def test_a_wrong_secret_stops_at_once_and_commits_nothing(workspace, serve, monkeypatch):
    hook = serve()
    monkeypatch.setenv("WEBHOOK_SECRET", "wrong-secret")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'hook' refused the credentials" in e for e in run.errors), run.errors
    assert "wrong-secret" not in " ".join(run.errors)
    assert received(hook) == {}
    assert hook.state()["stats"]["bad_signatures"] >= 1
    assert workspace.store.sync_state("contacts_to_hook").cursor is None
