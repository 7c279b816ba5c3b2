"""The dry run: what a sync's next run would send, worked out with nothing sent, committed or
written to the state store; then the real run sends exactly that."""

from __future__ import annotations

import hashlib
import json

import pytest
from dagster import DagsterEventType

from retl_assets.assets import build_retl_definitions
from retl_assets.cli import main
from retl_assets.destinations import open_destination
from retl_assets.dryrun import dry_run
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.hubspot import HubSpotEmulator, build_hubspot_app
from retl_assets.errors import ModelError
from retl_assets.sources import open_source


def state_files(ws) -> dict[str, str]:
    """Every file of the state store with a hash of its bytes."""
    root = ws.project.state_dir
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli_dry_run(ws, monkeypatch, capsys, sync: str, *extra: str) -> dict:
    monkeypatch.setenv("RETL_PROJECT", str(ws.root / "retl.yaml"))
    capsys.readouterr()
    assert main(["dry-run", sync, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def change_contacts(ws) -> None:
    """Five updates, two new rows, three deletes, and one row no identify can carry."""
    ws.sql("UPDATE contacts SET first_name = 'Changed' WHERE id IN "
           "('u000001', 'u000002', 'u000003', 'u000004', 'u000005')")
    ws.sql("INSERT INTO contacts VALUES ('n1', 'n1@example.com', 'Nia', 'free', 1, "
           "TIMESTAMP '2026-02-01'), ('n2', 'n2@example.com', 'Ned', 'pro', 1, "
           "TIMESTAMP '2026-02-02'), ('', 'blank@example.com', 'Blank', 'free', 1, "
           "TIMESTAMP '2026-02-03')")
    ws.sql("DELETE FROM contacts WHERE id IN ('u000010', 'u000011', 'u000012')")


def test_a_dry_run_changes_nothing_and_the_real_run_sends_what_it_said(
        workspace, emulator, monkeypatch, capsys):
    workspace.sync()
    change_contacts(workspace)
    before = state_files(workspace)
    accepted = emulator.state()["stats"]["messages_accepted"]

    identify = cli_dry_run(workspace, monkeypatch, capsys, "contacts_identify", "--samples", "50")
    deleted = cli_dry_run(workspace, monkeypatch, capsys, "contacts_deleted", "--samples", "50")

    assert state_files(workspace) == before  # not one byte of the state store changed
    assert emulator.state()["stats"]["messages_accepted"] == accepted  # nothing was sent
    assert identify["changes"] == {"added": 3, "updated": 5, "deleted": 3, "unchanged": 292}
    assert (identify["would_send"], identify["by_change"]) == (7, {"added": 2, "updated": 5})
    assert identify["rejected"] == 1
    assert identify["reasons"] == {"identify needs userId or anonymousId": 1}
    assert (deleted["would_send"], deleted["by_change"]) == (3, {"deleted": 3})
    assert "cannot be told" in identify["exists_note"]

    run = workspace.sync()
    assert run.status == "success", run.errors
    s = run.syncs["contacts_identify"]
    assert (s["sent"], s["succeeded"], s["invalid"]) == (7, 7, 1)
    assert run.syncs["contacts_deleted"]["succeeded"] == 3
    state = emulator.state()
    assert state["stats"]["messages_accepted"] - accepted == 10
    # The very payloads the dry run showed, idempotency keys and all.
    tracked = [e for e in state["events"] if e.get("event") == "Contact Deleted"]
    assert sorted(tracked, key=lambda e: e["userId"]) == sorted(
        deleted["samples"], key=lambda e: e["userId"])
    for sample in identify["samples"]:
        assert sample["messageId"] in emulator.seen_message_ids
        assert state["profiles"][sample["userId"]] | sample["traits"] == \
            state["profiles"][sample["userId"]]


def test_the_dry_run_job_records_an_observation_with_masked_samples(workspace, emulator):
    workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = 'Zed' WHERE id = 'u000001'")
    defs = build_retl_definitions(workspace.project)
    result = defs.resolve_job_def("retl_dry_run").execute_in_process(
        run_config={"ops": {"dry_run_sync": {"config": {"sync": "contacts_identify"}}}},
        instance=workspace.instance)
    assert result.success
    events = [r.dagster_event for r in workspace.instance.all_logs(result.run_id)
              if r.dagster_event is not None]
    assert not [e for e in events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION]
    observed = [e.event_specific_data.asset_observation for e in events
                if e.event_type == DagsterEventType.ASSET_OBSERVATION]
    assert [o.asset_key.to_user_string() for o in observed] == ["syncs/contacts_identify"]
    meta = {k: getattr(v, "value", v) for k, v in observed[0].metadata.items()}
    assert (meta["would_send"], meta["would_updated"], meta["dry_run"]) == (1, 1, True)
    # `samples: redacted` (the default): the shape, never the person.
    assert meta["sample_payloads"][0]["traits"]["first_name"].startswith("<text, ")
    assert "Zed" not in json.dumps(meta["sample_payloads"])
    assert emulator.state()["stats"]["messages_accepted"] == 300  # the first run's only


def test_a_model_diffed_in_the_warehouse_is_refused_by_name(workspace, emulator):
    workspace.write((workspace.root / "retl.yaml").read_text().replace(
        "    primary_key: userId\n", "    primary_key: userId\n    diff: in_warehouse\n"))
    project = workspace.project
    before = state_files(workspace)
    with pytest.raises(ModelError, match=r"model 'contacts' keeps its snapshot in the "
                                         r"warehouse \(`diff: in_warehouse`\).*nothing was run"):
        dry_run(project, workspace.store, "contacts_identify", open_source(project, "warehouse"),
                open_destination(project, "cio"))
    assert state_files(workspace) == before


HUBSPOT_TOKEN = "hs-dry-run-token"


def test_hubspot_is_asked_which_records_it_already_holds(workspace, monkeypatch):
    emu = HubSpotEmulator({HUBSPOT_TOKEN})
    with EmulatorServer(build_hubspot_app(emu)).start() as server:
        import httpx

        # HubSpot already holds 40 of the 300 contacts (by email), put there by someone else.
        emails = [r[0] for r in workspace.sql("SELECT email FROM contacts ORDER BY id LIMIT 40")]
        answer = httpx.post(f"{server.url}/crm/v3/objects/contacts/batch/upsert",
                            headers={"Authorization": f"Bearer {HUBSPOT_TOKEN}"},
                            json={"inputs": [{"idProperty": "email", "id": e,
                                              "properties": {"email": e}} for e in emails]})
        assert answer.status_code == 200
        monkeypatch.setenv("HUBSPOT_TOKEN", HUBSPOT_TOKEN)
        workspace.write(workspace.root.joinpath("retl.yaml").read_text().replace(
            "destinations:\n", f"destinations:\n  hubspot:\n    type: hubspot\n"
            f"    access_token: {{env: HUBSPOT_TOKEN}}\n    base_url: {server.url}\n") + """
  contacts_to_hubspot:
    model: contacts
    destination: hubspot
    action: upsert
    match: {email: email}
    mapping:
      firstname: first_name
""")
        project = workspace.project
        report = dry_run(project, workspace.store, "contacts_to_hubspot",
                         open_source(project, "warehouse"), open_destination(project, "hubspot"))
        assert report.exists == {"would_create": 260, "would_update": 40}
        assert report.would_send == 300 and report.by_change == {"added": 300}
        assert len(emu.records("contacts")) == 40  # asked, never written
