"""Switching a sync off and on at run time: its changes wait, nothing is lost, and the first
run after `retl enable` delivers each of them once."""

from __future__ import annotations

import pytest
from dagster import AssetKey

from retl_assets.assets import build_retl_definitions
from retl_assets.assets.switch_job import SWITCH_JOB
from retl_assets.cli import main
from retl_assets.switch import is_enabled, read_switch


def messages(emulator) -> int:
    return emulator.state()["stats"]["messages_accepted"]


def run_logs(workspace, run_id: str) -> list[str]:
    return [r.user_message for r in workspace.instance.all_logs(run_id)]


def launch_switch(workspace, **config):
    """The `retl_switch` job, as the Launchpad launches it."""
    job = build_retl_definitions(workspace.project).resolve_job_def(SWITCH_JOB)
    return job.execute_in_process(
        run_config={"ops": {"retl_switch_sync": {"config": config}}},
        instance=workspace.instance, raise_on_error=False)


def test_a_disabled_sync_catches_up_exactly_once_when_enabled(workspace, emulator, monkeypatch):
    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    first = workspace.sync()
    assert first.syncs["contacts_identify"]["succeeded"] == 300
    assert main(["disable", "contacts_identify", "--reason", "CRM migration"]) == 0
    on, why = is_enabled(workspace.project, workspace.store, "contacts_identify")
    assert not on and "CRM migration" in why and "since" in why
    cursor = workspace.store.sync_state("contacts_identify").cursor

    before = messages(emulator)
    workspace.sql("UPDATE contacts SET first_name = 'Ann' WHERE id IN ('u000001', 'u000002')")
    off1 = workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = 'Bob' WHERE id IN ('u000002', 'u000003')")
    workspace.sql("INSERT INTO contacts VALUES ('new-1', 'n@example.com', 'N', 'free', 1, "
                  "TIMESTAMP '2026-02-01')")
    off2 = workspace.sync()
    for run in (off1, off2):
        assert run.status == "success", run.errors
        assert "contacts_identify" not in run.syncs  # materialised nothing
        assert any("sync contacts_identify is disabled (since" in m and "CRM migration" in m
                   and "`retl enable contacts_identify` resumes" in m
                   for m in run_logs(workspace, run.run_id))
    assert messages(emulator) == before  # nothing sent while off
    assert workspace.store.sync_state("contacts_identify").cursor == cursor  # the cursor stays
    observed = workspace.instance.fetch_observations(AssetKey(["syncs", "contacts_identify"]),
                                                     limit=1).records
    assert "CRM migration" in observed[0].asset_observation.metadata["disabled"].value

    assert main(["enable", "contacts_identify"]) == 0
    back = workspace.sync()
    s = back.syncs["contacts_identify"]
    assert back.status == "success", back.errors
    # u000001, u000002 (twice changed: its newest change only), u000003 and new-1.
    assert (s["sent"], s["succeeded"], s["failed"]) == (4, 4, 0)
    assert messages(emulator) == before + 4
    profiles = emulator.state()["profiles"]
    assert [profiles[k]["first_name"] for k in ("u000001", "u000002", "u000003")] == \
        ["Ann", "Bob", "Bob"]
    assert profiles["new-1"]["email"] == "n@example.com"
    again = workspace.sync()
    assert again.syncs["contacts_identify"]["sent"] == 0
    assert messages(emulator) == before + 4


def test_the_launchpad_job_switches_a_sync(workspace):
    result = launch_switch(workspace, sync="contacts_deleted", enabled=False, reason="noisy")
    assert result.success
    switch = read_switch(workspace.store, "contacts_deleted")
    assert (switch.enabled, switch.reason) == (False, "noisy")
    assert switch.by == f"run {result.run_id}"
    assert any("sync contacts_deleted is disabled (since" in m and "noisy" in m
               for m in run_logs(workspace, result.run_id))
    assert launch_switch(workspace, sync="contacts_deleted", enabled=True).success
    assert is_enabled(workspace.project, workspace.store, "contacts_deleted")[0]


def test_switching_an_unknown_sync_names_the_syncs(workspace, monkeypatch, capsys):
    result = launch_switch(workspace, sync="nope", enabled=False)
    assert not result.success
    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    assert main(["disable", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no sync named 'nope'" in err and "contacts_identify" in err


def test_the_project_file_switch_wins_and_enable_says_so(workspace, monkeypatch, capsys):
    workspace.write((workspace.root / "retl.yaml").read_text().replace(
        "    records: deleted\n", "    records: deleted\n    enabled: false\n"))
    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    assert main(["enable", "contacts_deleted"]) == 1
    assert "`enabled: false` in retl.yaml" in capsys.readouterr().out
    on, why = is_enabled(workspace.project, workspace.store, "contacts_deleted")
    assert not on and "enabled: false" in why


@pytest.fixture(autouse=True)
def _no_project_env(monkeypatch):
    monkeypatch.delenv("RETL_PROJECT", raising=False)
