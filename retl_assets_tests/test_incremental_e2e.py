"""A model using {{last_sync_time}} merges its new rows into the snapshot and never deletes."""

from __future__ import annotations

import pytest

from retl_assets.errors import ProjectError

INCREMENTAL = 'SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts\n' \
              '      WHERE epoch(updated_at) > {{last_sync_time}}'


def make_incremental(ws, keep_deleted_sync: bool = False) -> None:
    text = (ws.root / "retl.yaml").read_text().replace(
        'SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts', INCREMENTAL)
    if not keep_deleted_sync:
        text = text[: text.index("  contacts_deleted:")]
    (ws.root / "retl.yaml").write_text(text)


def test_incremental_model_sends_only_new_rows_and_keeps_the_rest(workspace, emulator):
    make_incremental(workspace)
    first = workspace.sync()
    assert first.status == "success", first.errors
    assert first.added == 300
    workspace.sql("UPDATE contacts SET plan = 'pro', updated_at = now()::TIMESTAMP "
                  "WHERE id = 'u000001'")
    workspace.sql("DELETE FROM contacts WHERE id = 'u000002'")  # invisible to an incremental model
    second = workspace.sync()
    assert second.status == "success", second.errors
    assert (second.added, second.updated, second.deleted) == (0, 1, 0)
    assert second.rows == 300  # merged into the previous snapshot
    assert second.syncs["contacts_identify"]["sent"] == 1
    assert emulator.state()["profiles"]["u000001"]["plan"] == "pro"


def test_deleted_sync_on_an_incremental_model_is_a_load_error(workspace):
    make_incremental(workspace, keep_deleted_sync=True)
    with pytest.raises(ProjectError, match=r"syncs\.contacts_deleted\.records: .*incremental"):
        workspace.project
