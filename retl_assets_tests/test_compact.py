"""The changeset log is compacted: what every sync of the model consumed is folded away, and a
sync whose cursor falls behind that takes the snapshot whole instead of losing changes."""

from __future__ import annotations

from retl_assets_tests.conftest import PROJECT

IDENTIFY = """  contacts_identify:
    model: contacts
    destination: cio
    action: identify
    records: added_or_updated
"""


def logs(workspace) -> list[str]:
    return sorted(p.name for p in (workspace.store.model_dir("contacts") / "log").iterdir())


def test_the_log_keeps_only_the_newest_changeset_once_every_sync_consumed_it(
        workspace, emulator):
    for i in range(8):
        workspace.sql(f"UPDATE contacts SET first_name = 'Run{i}' WHERE id = 'u000001'")
        run = workspace.sync()
        assert run.status == "success", run.errors
        assert run.syncs["contacts_identify"]["sent"] == (300 if i == 0 else 1)
        files = logs(workspace)
        # The newest changeset, the first one's manifest and the marker; nothing grows.
        assert [f for f in files if f.endswith(".parquet")] == [f"{i + 1:09d}.parquet"], files
        assert len(files) <= 4, files
    assert workspace.store.compacted_through("contacts") == 7
    assert emulator.state()["profiles"]["u000001"]["first_name"] == "Run7"
    assert emulator.state()["stats"]["duplicates"] == 0


def test_a_sync_behind_the_compacted_log_takes_the_snapshot_whole(workspace, emulator):
    assert workspace.sync().status == "success"
    full = (workspace.root / "retl.yaml").read_text()
    # contacts_identify leaves the project file; the log moves on without it.
    workspace.write(full.replace(IDENTIFY, ""))
    for i in range(3):
        workspace.sql(f"UPDATE contacts SET plan = 'plan{i}' WHERE id = 'u00000{i + 2}'")
        assert workspace.sync().status == "success"
    assert workspace.store.compacted_through("contacts") >= 3
    assert workspace.store.sync_state("contacts_identify").cursor == 1

    workspace.write(full)  # back: the changes it missed were folded away, so all rows go
    again = workspace.sync()
    assert again.status == "success", again.errors
    assert again.syncs["contacts_identify"]["sent"] == 300
    profiles = emulator.state()["profiles"]
    assert [profiles[f"u00000{i + 2}"]["plan"] for i in range(3)] == ["plan0", "plan1", "plan2"]


def test_the_project_file_of_these_tests_has_the_sync_they_remove():
    assert IDENTIFY in PROJECT.replace("{{", "{").replace("}}", "}")
