"""`retl status`: every run of a model however it was started (the model's job, `retl sync`,
the UI's Materialize button or `dagster asset materialize`), failures included, with each
sync's counts; and each sync's health: last success, success rate, rows owed."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, AssetSpec, multi_asset
from dagster import materialize as dagster_materialize

from retl_assets import history
from retl_assets.assets import build_retl_definitions
from retl_assets.automation import current_partition, partitions_for
from retl_assets.cli import main
from retl_assets_tests.conftest import free_port

SYNC = "contacts_identify"

COMPANIES = """
  companies:
    source: warehouse
    primary_key: id
    schedule: {every: 15m}
    sql: SELECT id, name, domain FROM companies
syncs:
  companies_group:
    model: companies
    destination: cio
    action: group
    records: added_or_updated
    mapping:
      groupId: id
      userId: {value: "owner"}
      traits.name: name
"""


@pytest.fixture(autouse=True)
def home(workspace, monkeypatch):
    """`retl status` reads the instance the runs were written to."""
    monkeypatch.setenv("DAGSTER_HOME", workspace.instance.root_directory)


def materialize(ws, *keys: str):
    """A run as the UI's Materialize button or `dagster asset materialize` starts it: the
    implicit asset job, an asset selection, no retl tag."""
    project = ws.project
    job = build_retl_definitions(project).resolve_implicit_global_asset_job_def()
    partition = current_partition(partitions_for(project.models["contacts"]))
    result = job.execute_in_process(instance=ws.instance, partition_key=partition,
                                    asset_selection=[AssetKey.from_user_string(k) for k in keys],
                                    raise_on_error=False)
    assert ws.instance.get_run_by_id(result.run_id).job_name == "__ASSET_JOB"
    return result


def status_json(ws, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["--project", str(ws.root / "retl.yaml"), "status", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_runs_started_by_asset_selection_are_listed_failures_included(workspace, capsys):
    tagged = workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = 'Zed' WHERE id = 'u000001'")
    ui = materialize(workspace, "models/contacts", "diffs/contacts", f"syncs/{SYNC}")
    failed = materialize(workspace, "diffs/contacts")  # no new extract: it fails
    assert not failed.success

    runs = status_json(workspace, capsys)["runs"]
    assert [r["run_id"] for r in runs] == [failed.run_id, ui.run_id, tagged.run_id]
    first, second, third = runs
    assert (first["model"], first["status"], first["job"]) == ("contacts", "failure",
                                                               "__ASSET_JOB")
    assert any("has no new snapshot since the last diff" in e for e in first["errors"])
    assert (second["status"], second["updated"], second["unchanged"]) == ("success", 1, 299)
    assert second["syncs"] == {SYNC: {**second["syncs"][SYNC], "status": "success", "sent": 1,
                                      "succeeded": 1, "failed": 0, "owed": 0, "retries": 0}}
    assert second["syncs"][SYNC]["records_per_s"] is not None
    assert (third["added"], third["syncs"]["contacts_deleted"]["status"]) == (300, "success")
    for r in runs:
        assert r["started_at"] and r["duration_s"] is not None and r["duration_s"] >= 0
        assert r["partition"] == second["partition"]

    health = {h["sync"]: h for h in status_json(workspace, capsys)["health"]}
    # The diff-only run did not include the sync: two runs of it, both delivered.
    ident = health[SYNC]
    assert (ident["runs"], ident["succeeded"], ident["success_rate"]) == (2, 2, 1.0)
    assert ident["last_success_run"] == ui.run_id and ident["last_success_at"]
    assert (ident["owed"], ident["pending"], ident["enabled"]) == (0, 0, True)
    assert health["contacts_deleted"]["runs"] == 1
    # Asked for one sync: its runs only, its counts only.
    only = status_json(workspace, capsys, SYNC)
    assert [r["run_id"] for r in only["runs"]] == [ui.run_id, tagged.run_id]
    assert all(set(r["syncs"]) == {SYNC} for r in only["runs"])
    assert [h["sync"] for h in only["health"]] == [SYNC]


def test_a_run_of_two_models_is_listed_once_for_each(workspace, capsys):
    text = (workspace.root / "retl.yaml").read_text()
    models, syncs = COMPANIES.split("syncs:\n")
    workspace.write(text.replace("syncs:\n", models + "syncs:\n" + syncs, 1))
    run = materialize(workspace, "models/contacts", "diffs/contacts", f"syncs/{SYNC}",
                      "models/companies", "diffs/companies", "syncs/companies_group")
    assert run.success
    runs = history.runs(workspace.instance, workspace.project)
    assert sorted((r.run_id, r.model) for r in runs) == [(run.run_id, "companies"),
                                                          (run.run_id, "contacts")]
    by_model = {r.model: r for r in runs}
    assert (by_model["contacts"].added, set(by_model["contacts"].syncs)) == (300, {SYNC})
    assert (by_model["companies"].added, set(by_model["companies"].syncs)) == (
        20, {"companies_group"})
    only = status_json(workspace, capsys, "companies")["runs"]
    assert [(r["run_id"], r["model"]) for r in only] == [(run.run_id, "companies")]


def test_a_dead_destination_shows_the_rows_it_left_owed(workspace, emulator, capsys):
    url = emulator.url
    text = (workspace.root / "retl.yaml").read_text()
    workspace.write(text.replace(url, f"http://127.0.0.1:{free_port()}")
                    .replace("max_retries: 8", "max_retries: 1"))
    dead = workspace.sync()
    assert dead.status == "failure"
    out = status_json(workspace, capsys)
    [run] = out["runs"]
    assert run["run_id"] == dead.run_id and run["status"] == "failure"
    ident = run["syncs"][SYNC]
    assert ident["status"] == "failure"
    assert ident["owed"] == 300, ident  # every row, not 0
    health = {h["sync"]: h for h in out["health"]}[SYNC]
    assert (health["runs"], health["succeeded"], health["last_success_run"]) == (1, 0, None)
    assert health["owed"] + health["pending"] == 300

    workspace.write(text)  # back online
    assert workspace.sync().status == "success"
    health = {h["sync"]: h for h in status_json(workspace, capsys)["health"]}[SYNC]
    assert (health["runs"], health["succeeded"], health["success_rate"]) == (2, 1, 0.5)
    assert (health["owed"], health["pending"]) == (0, 0)
    narrow = {h["sync"]: h for h in status_json(
        workspace, capsys, "--runs-for-health", "1")["health"]}[SYNC]
    assert (narrow["runs"], narrow["success_rate"]) == (1, 1.0)


def test_a_failed_sync_that_did_not_say_what_it_owes_shows_owed_as_unknown(workspace,
                                                                            capsys):
    # A sync step that stops with no counts in its Failure (as one raised by another
    # release, or before it could count): owed is unknown, "?", never 0.
    assert workspace.sync().status == "success"

    @multi_asset(specs=[AssetSpec(AssetKey(["syncs", SYNC]))], name=f"retl_sync__{SYNC}")
    def stopped():
        raise RuntimeError("the destination went away")

    run = dagster_materialize([stopped], instance=workspace.instance, raise_on_error=False,
                              tags={"retl/model": "contacts"})
    [summary, _] = history.runs(workspace.instance, workspace.project)
    assert summary.run_id == run.run_id and summary.status == "failure"
    assert summary.syncs[SYNC]["status"] == "failure"
    assert summary.syncs[SYNC]["owed"] is None and summary.syncs[SYNC]["sent"] is None
    capsys.readouterr()
    assert main(["--project", str(workspace.root / "retl.yaml"), "status"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if f"sync {SYNC}: failure" in x)
    assert "owed ?" in line and "sent ?" in line
    assert f"sync {SYNC}: success  sent 300  succeeded 300  failed 0  retried 0  owed 0" in out
    assert "the destination went away" in out
    health = next(x for x in out.splitlines() if x.startswith(f"{SYNC} "))
    assert "50% of 2" in health


def test_an_unknown_name_is_named_with_the_choices(workspace, capsys):
    assert main(["--project", str(workspace.root / "retl.yaml"), "status", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no model or sync named 'nope' (models: contacts; syncs: contacts_identify, " \
           "contacts_deleted)" in err
