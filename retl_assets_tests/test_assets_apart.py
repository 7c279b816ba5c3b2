"""Each asset of a model materialised on its own, on a real instance, and the resources the
assets take: the UI, `dagster asset materialize` and `retl sync` may run any of them alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import materialize, serialize_value

from retl_assets.assets import RetlStateStore, build_retl_definitions
from retl_assets.automation import current_partition, partitions_for
from retl_assets.state.store import StateStore
from retl_assets_tests.conftest import WRITE_KEY

MODEL, DIFF, SYNC = "models/contacts", "diffs/contacts", "syncs/contacts_identify"


def messages(emulator) -> int:
    return emulator.state()["stats"]["messages_accepted"]


def partition(ws) -> str:
    return current_partition(partitions_for(ws.project.models["contacts"]))


# ------------------------------------------------------------------ 1. resources


def test_assets_take_the_state_store_and_destinations_as_resources(workspace, emulator,
                                                                    monkeypatch, tmp_path):
    # Built without the credential: a destination reads it only when a run opens it.
    monkeypatch.delenv("CIO_WRITE_KEY")
    defs = build_retl_definitions(workspace.project)
    assert set(defs.resources) == {"retl_state", "retl_sources", "retl_destinations"}
    needs = {key.to_user_string(): a.required_resource_keys - {"io_manager"}
             for a in defs.assets for key in a.keys}
    assert needs[MODEL] == {"retl_state", "retl_sources"}
    assert needs[DIFF] == {"retl_state", "retl_sources"}  # `diff: in_warehouse` runs there
    assert needs[SYNC] == {"retl_state", "retl_destinations"}

    # The environment read after the Definitions were built changes nothing in a run...
    monkeypatch.setenv("CIO_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("RETL_STATE_DIR", str(tmp_path / "elsewhere"))
    job = defs.resolve_job_def("retl_contacts")
    result = job.execute_in_process(instance=workspace.instance,
                                    partition_key=partition(workspace))
    assert result.success
    assert not (tmp_path / "elsewhere").exists()
    monkeypatch.delenv("RETL_STATE_DIR")
    assert workspace.store.head("contacts").version == 1
    assert messages(emulator) == 300

    # ...while a resource given in its place is what the assets use.
    other = tmp_path / "other_state"
    done = materialize(list(defs.assets), instance=workspace.instance,
                       partition_key=partition(workspace), selection=[MODEL, DIFF],
                       resources={**defs.resources, "retl_state": RetlStateStore(root=str(other))})
    assert done.success
    assert StateStore(other).head("contacts").version == 1
    assert workspace.store.head("contacts").version == 1  # untouched

    # The credential is nowhere in what the instance stored or the UI shows.
    stored = stored_text(workspace.instance)
    assert "retl_destinations" in stored and WRITE_KEY not in stored


def test_a_literal_secret_in_the_project_file_is_not_in_what_the_ui_shows(workspace):
    # Dagster's own snapshots: of the code location (resources and their config, as the UI
    # lists them) and of the job (written to run storage with every run).
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.snap import JobSnap

    workspace.write((workspace.root / "retl.yaml").read_text().replace(
        "{env: CIO_WRITE_KEY}", WRITE_KEY))
    defs = build_retl_definitions(workspace.project)
    repo = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    job = serialize_value(JobSnap.from_job_def(defs.resolve_job_def("retl_contacts")))
    assert "retl_destinations" in repo and "retl_destinations" in job
    assert str(workspace.project.state_dir) in repo  # the state store's config is shown
    assert WRITE_KEY not in repo and WRITE_KEY not in job


def stored_text(instance) -> str:
    """Everything the instance keeps of its runs, as text: each run's config, its job
    snapshot (the resource config the UI shows, stored compressed), its event log, and the
    raw bytes of every file under DAGSTER_HOME."""
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
        parts.append(str(run.run_config))
        parts += [serialize_value(e) for e in instance.all_logs(run.run_id)]
    home = Path(instance.root_directory)
    parts += [p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()]
    return "\n".join(parts)


# ------------------------------------------------------------ 2. models/M, diffs/M apart


def test_model_alone_then_diff_alone_commits_the_newest_extract(workspace, emulator):
    first = workspace.sync()
    assert first.status == "success", first.errors
    store = workspace.store

    workspace.sql("UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010'")
    assert workspace.sync(assets=[MODEL]).status == "success"
    workspace.sql("UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000011'")
    model_run = workspace.sync(assets=[MODEL])  # supersedes the first extract: the newer one
    assert model_run.status == "success", model_run.errors
    assert store.head("contacts").version == 1  # no diff yet: the base has not moved
    assert len(list((store.model_dir("contacts") / "staged").glob("*.parquet"))) == 1
    workspace.sql("UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000012'")  # not extracted

    diff = workspace.sync(assets=[DIFF])
    assert diff.status == "success", diff.errors
    assert (diff.added, diff.updated, diff.deleted) == (0, 2, 0)
    head = store.head("contacts")
    assert head.version == 2
    # {{last_sync_time}} counts from the run that extracted, not the one that diffed.
    record = workspace.instance.get_run_record_by_id(model_run.run_id)
    assert head.run_started_at == record.start_time
    assert messages(emulator) == 300  # the diff alone sends nothing

    sent = workspace.sync(assets=[SYNC])
    assert sent.syncs["contacts_identify"]["sent"] == 2
    everything = workspace.sync()  # the change made after the extract comes with the next one
    assert everything.updated == 1 and everything.syncs["contacts_identify"]["sent"] == 1
    assert emulator.state()["profiles"] == workspace.model_rows()


def test_diff_alone_without_a_new_extract_says_so_and_moves_nothing(workspace, emulator):
    never = workspace.sync(assets=[DIFF])
    assert never.status == "failure"
    assert any("models/contacts has no new snapshot since the last diff (the base is no "
               "snapshot yet): materialise models/contacts first" in e for e in never.errors)

    assert workspace.sync().status == "success"
    again = workspace.sync(assets=[DIFF, SYNC])
    assert again.status == "failure"
    assert any("the base is snapshot v1" in e for e in again.errors), again.errors
    head = workspace.store.head("contacts")
    assert (head.version, head.log_seq) == (1, 1)
    assert "contacts_identify" not in again.syncs  # skipped after the diff: nothing sent
    assert messages(emulator) == 300


def test_dagster_asset_materialize_runs_model_and_diff_apart(workspace, emulator):
    def dagster(select: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "RETL_PROJECT": str(workspace.root / "retl.yaml"),
               "DAGSTER_HOME": workspace.instance.root_directory, "CIO_WRITE_KEY": WRITE_KEY}
        return subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
             "-m", "retl_assets.definitions", "--select", select,
             "--partition", partition(workspace)],
            env=env, capture_output=True, text=True, timeout=180)

    model = dagster(MODEL)
    assert model.returncode == 0, model.stderr[-3000:]
    assert workspace.store.pending_extract("contacts") is not None
    diff = dagster(DIFF)
    assert diff.returncode == 0, diff.stderr[-3000:]
    assert workspace.store.head("contacts").version == 1
    assert workspace.store.pending_extract("contacts") is None
    again = dagster(DIFF)
    assert again.returncode != 0
    assert "has no new snapshot since the last diff" in again.stdout + again.stderr
    assert workspace.store.head("contacts").version == 1


# --------------------------------------------------------------------- 3. syncs/S alone


def test_sync_alone_with_nothing_pending_sends_nothing(workspace, emulator):
    assert workspace.sync().status == "success"
    before = messages(emulator)
    # contacts_deleted maps columns by name: its payload still plans on an empty work set.
    run = workspace.sync(assets=[SYNC, "syncs/contacts_deleted"])
    assert run.status == "success", run.errors
    for name in ("contacts_identify", "contacts_deleted"):
        assert (run.syncs[name]["sent"], run.syncs[name]["owed"]) == (0, 0)
    assert messages(emulator) == before


def test_sync_alone_delivers_rows_owed_by_an_earlier_failed_run(workspace, emulator):
    (workspace.root / "retl.yaml").write_text(
        (workspace.root / "retl.yaml").read_text().replace("max_retries: 8", "max_retries: 1"))
    assert workspace.sync().status == "success"
    workspace.sql("UPDATE contacts SET first_name = 'Owed' WHERE id IN "
                  "('u000001', 'u000002', 'u000003')")
    emulator.set_faults(dead=True)
    failed = workspace.sync()
    assert failed.status == "failure"
    state = workspace.store.sync_state("contacts_identify")
    assert state.owed == 3 or state.cursor == 1  # kept: in the ledger, or behind the cursor

    emulator.set_faults(dead=False)
    run = workspace.sync(assets=[SYNC])
    assert run.status == "success", run.errors
    s = run.syncs["contacts_identify"]
    assert (s["sent"], s["succeeded"], s["owed"]) == (3, 3, 0)
    assert emulator.state()["profiles"] == workspace.model_rows()
    assert workspace.sync(assets=[SYNC]).syncs["contacts_identify"]["sent"] == 0
