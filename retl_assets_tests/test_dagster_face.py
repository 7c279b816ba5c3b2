"""retl as a first-class Dagster citizen: what the asset definitions say, the checks each run
records, runs started from an asset selection, partitions that invite no meaningless
backfill, personal data kept out of the event log, and syncs checked before anything commits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterEventType, MetadataValue, serialize_value

from retl_assets.assets import (
    RetlAssetData,
    RetlTranslator,
    build_retl_definitions,
    build_retl_specs,
)
from retl_assets.automation import current_partition, partitions_for, project_partitions
from retl_assets.automation.partitions import refuse_backfill
from retl_assets.definitions import missing_partition
from retl_assets.errors import ModelError
from retl_assets.redact import masked, shown
from retl_assets.state.store import StateStore
from retl_assets_tests.conftest import WRITE_KEY

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def specs(ws) -> dict[str, object]:
    return {s.key.to_user_string(): s for _, s in build_retl_specs(ws.project)}


def edit(ws, old: str, new: str) -> None:
    text = (ws.root / "retl.yaml").read_text()
    assert old in text, old
    ws.write(text.replace(old, new))


# ------------------------------------------------------------- 1, 2, 6, 9: definitions


def test_each_asset_carries_its_definition_owners_code_version_and_lineage(workspace):
    edit(workspace, "    primary_key: userId\n",
         "    primary_key: userId\n    owners: [team:growth]\n")
    edit(workspace, "      event: {value: \"Contact Deleted\"}\n",
         "      event: {value: \"Contact Deleted\"}\n"
         "      properties.who: {template: \"{{ first_name }} <{{ email }}>\"}\n"
         "    owners: [crm@example.com]\n")
    by_key = specs(workspace)
    model, diff = by_key["models/contacts"], by_key["diffs/contacts"]
    identify, deleted = by_key["syncs/contacts_identify"], by_key["syncs/contacts_deleted"]

    # Owners: the model's, unless the sync names its own.
    assert model.owners == diff.owners == identify.owners == ["team:growth"]
    assert deleted.owners == ["crm@example.com"]
    # The definition, as metadata: the SQL as a code block, the source, the sync's contract.
    assert model.metadata["sql"] == MetadataValue.md(
        "```sql\n" + workspace.project.models["contacts"].sql + "\n```")
    assert model.metadata["source"] == "warehouse (duckdb)"
    assert identify.metadata["destination"] == "cio (customerio)"
    assert identify.metadata["action"] == "identify"
    assert identify.metadata["records"] == "added + updated"
    assert deleted.metadata["mapping"].data["event"] == {"value": "Contact Deleted"}
    # The model reads table `contacts`: a dbt model of that name is its upstream asset.
    assert [d.asset_key for d in model.deps] == [AssetKey(["contacts"])]
    # Column lineage from the mapping: destination field <- the model's columns.
    lineage = deleted.metadata["dagster/column_lineage"].deps_by_column
    assert {f: [(d.asset_key, d.column_name) for d in deps] for f, deps in lineage.items()} == {
        "userId": [(AssetKey(["models", "contacts"]), "userId")],
        "properties.who": [(AssetKey(["models", "contacts"]), "email"),
                           (AssetKey(["models", "contacts"]), "first_name")]}
    # A sync that maps by name has columns only known at run time: no lineage is claimed.
    assert "dagster/column_lineage" not in identify.metadata
    # The graph labels a node by its key's last part: the kinds tell the two "contacts" apart.
    assert "snapshot" in model.kinds and "changeset" in diff.kinds
    assert identify.description == "identify added_or_updated rows of contacts to cio"

    # The code version follows the SQL, and a sync's follows its mapping too.
    before = {k: s.code_version for k, s in by_key.items()}
    edit(workspace, "event: {value: \"Contact Deleted\"}", "event: {value: \"Gone\"}")
    after = {k: s.code_version for k, s in specs(workspace).items()}
    assert after["syncs/contacts_deleted"] != before["syncs/contacts_deleted"]
    assert after["models/contacts"] == before["models/contacts"]
    edit(workspace, "updated_at FROM contacts", "updated_at FROM analytics.contacts")
    changed = specs(workspace)
    assert changed["models/contacts"].code_version != before["models/contacts"]
    assert [d.asset_key for d in changed["models/contacts"].deps] == [
        AssetKey(["analytics", "contacts"])]

    # A sync without `records:` takes added and updated rows, and says so.
    edit(workspace, "    action: identify\n    records: added_or_updated\n",
         "    action: identify\n")
    assert specs(workspace)["syncs/contacts_identify"].description == (
        "identify added and updated rows of contacts to cio")


# ------------------------------------------------------------------- 3, 7: one run


def test_a_run_records_each_check_once_with_its_partition_and_no_email(workspace):
    run = workspace.sync()
    assert run.status == "success", run.errors
    instance, partition = workspace.instance, run.partition
    expected = {("models", "contacts"): ["primary_key_present", "primary_key_not_null",
                                         "primary_key_unique"],
                ("diffs", "contacts"): ["max_delete_fraction"],
                ("syncs", "contacts_identify"): ["rows_owed", "failure_share"]}
    for key, names in expected.items():
        for name in names:
            history = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(AssetKey(list(key)), name), limit=10)
            assert [(r.status.value, r.partition, r.run_id) for r in history] == [
                ("SUCCEEDED", partition, run.run_id)], (key, name)

    # Personal data: the demo's e-mail addresses never reach the event log by default.
    emails = [r[0] for r in workspace.sql("SELECT email FROM contacts LIMIT 300")]
    logged = "\n".join(serialize_value(e) for e in instance.all_logs(run.run_id))
    assert not [e for e in emails if e in logged]
    mats = {e.dagster_event.event_specific_data.materialization.asset_key.to_user_string():
            e.dagster_event.event_specific_data.materialization.metadata
            for e in instance.all_logs(run.run_id,
                                       of_type=DagsterEventType.ASSET_MATERIALIZATION)}
    payload = mats["syncs/contacts_identify"]["sample_payloads"].data[0]
    assert payload["traits"]["email"].startswith("<text, ")  # the shape stays
    assert "| userId (VARCHAR) |" in mats["models/contacts"]["preview"].md_str

    workspace.sql("DELETE FROM contacts WHERE id > 'u000100'")
    deleting = workspace.sync()
    assert deleting.status == "failure" and deleting.checks["max_delete_fraction"] is False
    assert any("max_delete_fraction" in e for e in deleting.errors), deleting.errors
    assert workspace.store.head("contacts").version == 1


def test_samples_full_shows_values_and_off_leaves_them_out(workspace):
    edit(workspace, "syncs:\n", "samples: \"off\"\nsyncs:\n")
    off = workspace.sync()
    mats = workspace.instance.all_logs(off.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    metadata = {k for e in mats for k in e.dagster_event.event_specific_data.materialization.metadata}
    assert "preview" not in metadata and "sample_payloads" not in metadata

    edit(workspace, "samples: \"off\"\n", "samples: full\n")
    workspace.sql("UPDATE contacts SET first_name = 'Full' WHERE id = 'u000001'")
    full = workspace.sync()
    logged = "\n".join(serialize_value(e) for e in workspace.instance.all_logs(full.run_id))
    email = workspace.sql("SELECT email FROM contacts WHERE id = 'u000001'")[0][0]
    assert email in logged


def test_redaction_keeps_the_shape_and_masks_every_value():
    row = {"userId": "ann@example.com", "traits": {"age": 41, "vip": True, "tags": ["a", None]},
           "at": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    assert masked(row) == {"userId": "<text, 15 chars>",
                           "traits": {"age": "<number>", "vip": "<bool>",
                                      "tags": ["<text, 1 chars>", None]},
                           "at": "<timestamp>"}
    assert shown(row, "full") is row and shown(row, "off") is None


# -------------------------------------------------------- 8: fail before anything commits


def test_a_bad_mapping_or_a_missing_secret_fails_the_model_before_it_commits(
        workspace, emulator, monkeypatch):
    edit(workspace, "      userId: userId\n", "      userId: user_id\n")
    bad = workspace.sync()
    assert bad.status == "failure"
    assert any("syncs.contacts_deleted.mapping.userId: column 'user_id' is not in model"
               in e and "nothing was committed" in e for e in bad.errors), bad.errors
    store = workspace.store
    assert store.head("contacts").version == 0 and store.pending_extract("contacts") is None
    assert emulator.state()["stats"]["messages_accepted"] == 0

    # A disabled sync is not in the run: it does not hold the others back.
    edit(workspace, "event: {value: \"Contact Deleted\"}\n",
         "event: {value: \"Contact Deleted\"}\n    enabled: false\n")
    monkeypatch.delenv("CIO_WRITE_KEY")
    missing = workspace.sync()
    assert missing.status == "failure"
    assert any("sync 'contacts_identify'" in e and "CIO_WRITE_KEY is not set" in e
               for e in missing.errors), missing.errors
    assert not any("contacts_deleted" in e for e in missing.errors)
    assert store.head("contacts").version == 0

    monkeypatch.setenv("CIO_WRITE_KEY", WRITE_KEY)
    assert workspace.sync().status == "success"
    assert store.head("contacts").version == 1


# ------------------------------------------------------------------ 5: partitions


@dataclass(frozen=True)
class SinceJanuary(RetlTranslator):
    """Partitions from `Schedule.start`, as before: Dagster then offers the past ticks."""

    def get_asset_spec(self, data: RetlAssetData):
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            partitions_def=partitions_for(data.project.models[data.model]))


# ------------------------------------------------- 4, 9: `dagster asset ...` from the repo root


def test_partitions_start_where_syncing_began_and_backfills_are_refused(workspace, emulator):
    # With the partitions of old, Dagster offers a past tick; the run refuses it.
    defs = build_retl_definitions(workspace.project, SinceJanuary())
    result = defs.resolve_job_def("retl_contacts").execute_in_process(
        instance=workspace.instance, partition_key="2026-11-01-00:00", raise_on_error=False,
        tags={"dagster/backfill": "b1"})
    assert not result.success
    failures = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    assert "backfill b1 asks for partition 2026-11-01-00:00" in str(failures[0])
    assert emulator.state()["stats"]["messages_accepted"] == 0
    assert workspace.store.head("contacts").version == 0

    project = workspace.project
    model = project.models["contacts"]
    now = datetime(2026, 11, 23, 10, 20, tzinfo=timezone.utc)
    store = StateStore(project.state_dir)
    before = project_partitions(project, store, now)["contacts"]
    assert before.get_partition_keys(now) == ["2026-11-23-10:00"]  # not ~32,000 since Jan

    run = workspace.sync()
    assert run.status == "success", run.errors
    later = datetime.now(timezone.utc)
    after = project_partitions(workspace.project, store, later)["contacts"]
    assert after.get_first_partition_key() == run.partition

    current = current_partition(partitions_for(model))
    refuse_backfill(model, current, {"dagster/backfill": "b1"})  # the current one is fine
    refuse_backfill(model, "2026-01-01-00:00", {})  # not a backfill
    with pytest.raises(ModelError, match=r"backfill b1 asks for partition 2026-01-01-00:00.*"
                                         r"Materialise the current partition"):
        refuse_backfill(model, "2026-01-01-00:00", {"dagster/backfill": "b1"})


def dagster(ws, *args: str, select: str, partition: str | None) -> subprocess.CompletedProcess:
    # `dagster asset` reads no project file: DAGSTER_MODULE_NAME is how it finds the code.
    env = {**os.environ, "RETL_PROJECT": str(ws.root / "retl.yaml"),
           "DAGSTER_HOME": ws.instance.root_directory, "CIO_WRITE_KEY": WRITE_KEY,
           "DAGSTER_MODULE_NAME": "retl_assets.definitions"}
    return subprocess.run(
        [DAGSTER, "asset", *args, "--select", select,
         *(["--partition", partition] if partition else [])],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_dagster_asset_materialize_of_two_models_is_tagged_and_leased(workspace, emulator):
    # A second model on the same cadence: their partitions match, so one run takes both.
    edit(workspace, "syncs:\n", "  people:\n    source: warehouse\n    primary_key: id\n"
                                "    schedule: {every: 15m}\n"
                                "    sql: SELECT id, plan FROM contacts\nsyncs:\n")
    project = workspace.project
    assert set(project.models) == {"contacts", "people"}
    defs = build_retl_definitions(project)
    selection = "models/contacts,diffs/contacts,syncs/contacts_identify,models/people"
    current = current_partition(partitions_for(project.models["contacts"]))

    # Without --partition, Dagster's CLI would stop with a bare CheckError before any retl
    # code runs; the definitions module, which it loads first, says what to pass instead.
    hint = missing_partition(defs, project, [DAGSTER, "asset", "materialize", "-m",
                                             "retl_assets.definitions", "--select", selection])
    assert hint is not None and f"--partition {current}" in hint
    assert missing_partition(defs, project, [DAGSTER, "asset", "materialize", "--select",
                                             selection, "--partition", current]) is None

    # The model's lease holds for Dagster's own asset job too: a live holder stops it at once.
    lease = workspace.store.lease_path("contacts")
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps({"run_id": "another-run", "pid": 1, "host": "elsewhere",
                                 "acquired_at": time.time(), "expires_at": time.time() + 300}))
    held = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=workspace.instance, partition_key=current, raise_on_error=False,
        asset_selection=[AssetKey.from_user_string(k) for k in selection.split(",")])
    assert not held.success
    errors = [str(e.step_failure_data.error) for e in held.all_events if e.is_step_failure]
    assert any("is being synced by run another-run" in e for e in errors), errors
    assert emulator.state()["stats"]["messages_accepted"] == 0
    lease.unlink()

    listed = dagster(workspace, "list", select="*", partition=None)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {"models/contacts", "models/people", "syncs/contacts_identify"} <= set(
        listed.stdout.split())

    done = dagster(workspace, "materialize", select=selection, partition=current)
    assert done.returncode == 0, done.stderr[-3000:]
    run = workspace.instance.get_runs(limit=1)[0]
    assert run.job_name == "__ASSET_JOB"
    assert run.tags["retl/model"] == "contacts,people"
    assert run.tags["dagster/partition"] == current
    assert emulator.state()["stats"]["messages_accepted"] == 300
    assert workspace.store.head("contacts").version == 1
    assert workspace.store.pending_extract("people") is not None  # diffs/people not selected
