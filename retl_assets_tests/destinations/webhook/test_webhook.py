"""A signed webhook as a user sets it up: contacts mirrored to their own HTTPS endpoint."""

from __future__ import annotations

import duckdb
import pytest

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


def test_items_named_by_idempotency_key_fail_alone_and_land_once_fixed(workspace, serve):
    # A receiver that names a failed item by its idempotency key, not its index (the
    # contract suite's receiver names the index), and wants its tenant header.
    hook = serve(required=["email"], error_key="idempotency_key")
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


