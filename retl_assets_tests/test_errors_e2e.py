"""Bad input gets a clear error naming the model, sync or field, and loses nothing."""

from __future__ import annotations


import re

import pytest

from retl_assets.emulators import EmulatorServer, SegmentEmulator, build_segment_app
from retl_assets.errors import ProjectError
from retl_assets_tests.conftest import free_port


def replace_in_project(ws, old: str, new: str) -> None:
    path = ws.root / "retl.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def committed(ws):
    store = ws.store
    return store.head("contacts"), store.sync_state("contacts_identify")


def test_bad_sql_names_the_model_and_keeps_the_snapshot(workspace):
    assert workspace.sync().status == "success"
    before = committed(workspace)
    replace_in_project(workspace, "FROM contacts", "FROM no_such_table")
    run = workspace.sync()
    assert run.status == "failure"
    assert "no_such_table" in run.errors[0] and "warehouse" in run.errors[0]
    assert committed(workspace) == before


@pytest.mark.parametrize("change, words", [
    ("UPDATE contacts SET id = 'u000001' WHERE id = 'u000002'", "appear more than once"),
    ("UPDATE contacts SET id = NULL WHERE id = 'u000002'", "NULL primary key"),
])
def test_bad_keys_stop_before_the_diff(workspace, change, words):
    assert workspace.sync().status == "success"
    before = committed(workspace)
    workspace.sql("CREATE TABLE c2 AS SELECT * FROM contacts; DROP TABLE contacts; "
                  "ALTER TABLE c2 RENAME TO contacts")  # drop the warehouse's own key constraint
    workspace.sql(change)
    run = workspace.sync()
    assert run.status == "failure"
    assert any("model 'contacts'" in e and words in e for e in run.errors), run.errors
    assert committed(workspace) == before
    assert run.checks["primary_key_present"] is True
    assert False in (run.checks["primary_key_unique"], run.checks["primary_key_not_null"])


def test_missing_key_column_names_it(workspace):
    replace_in_project(workspace, 'id AS "userId"', 'id AS "user_id"')
    run = workspace.sync()
    assert run.status == "failure"
    assert any("primary key column userId is not in the query result" in e for e in run.errors)
    assert workspace.store.head("contacts").version == 0


def test_mapping_to_a_missing_column_names_sync_and_field(workspace):
    replace_in_project(workspace, "      userId: userId\n", "      userId: user_id\n")
    run = workspace.sync()
    assert run.status == "failure"
    err = [e for e in run.errors if "contacts_deleted" in e][0]
    assert "syncs.contacts_deleted.mapping.userId" in err and "'user_id'" in err
    # Found before anything commits: no snapshot, no diff, nothing sent by any sync.
    assert workspace.store.head("contacts").version == 0
    assert run.syncs == {}
    assert workspace.store.sync_state("contacts_identify").cursor is None



def test_unreachable_destination_fails_and_keeps_the_changes(workspace, emulator):
    url = emulator.url
    replace_in_project(workspace, url, f"http://127.0.0.1:{free_port()}")
    replace_in_project(workspace, "max_retries: 8", "max_retries: 1")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'cio' could not be reached" in e for e in run.errors), run.errors
    assert workspace.store.sync_state("contacts_identify").cursor is None
    # Back online: everything that was owed arrives.
    replace_in_project(workspace, "http://127.0.0.1:", "PLACEHOLDER")
    text = (workspace.root / "retl.yaml").read_text()
    import re
    (workspace.root / "retl.yaml").write_text(re.sub(r"PLACEHOLDER\d+", url, text))
    again = workspace.sync()
    assert again.status == "success", again.errors
    assert emulator.state()["profiles"] == workspace.model_rows()


def test_wrong_write_key_stops_at_once_naming_the_destination(workspace, emulator, monkeypatch):
    # Customer.io answers a wrong key 200 unless asked for strict mode, which retl does.
    monkeypatch.setenv("CIO_WRITE_KEY", "wrong-key")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("'cio' refused the credentials" in e for e in run.errors), run.errors
    assert "wrong-key" not in " ".join(run.errors)
    assert 1 <= emulator.state()["stats"]["status"].get("401", 0) <= 4  # no retry storm
    assert emulator.state()["profiles"] == {} and emulator.state()["stats"]["unauthorized"] == 0
    assert workspace.store.sync_state("contacts_identify").cursor is None


def test_a_wrong_segment_write_key_goes_unnoticed_as_at_segment(workspace, monkeypatch):
    # Segment answers 200 to a wrong key and drops the events: retl cannot tell, and says so
    # in test-connection and the README. This pins that limit down rather than hiding it.
    segment = SegmentEmulator(write_keys={"right-key"}, flavor="segment")
    with EmulatorServer(build_segment_app(segment)) as server:
        text = (workspace.root / "retl.yaml").read_text()
        (workspace.root / "retl.yaml").write_text(
            re.sub(r"base_url: \S+", f"base_url: {server.url}", text)
            .replace("type: customerio", "type: segment"))
        monkeypatch.setenv("CIO_WRITE_KEY", "wrong-key")
        run = workspace.sync()
    assert run.status == "success", run.errors
    assert segment.state()["profiles"] == {}
    assert segment.state()["stats"]["unauthorized"] >= 1


def test_missing_secret_names_the_variable(workspace, monkeypatch):
    monkeypatch.delenv("CIO_WRITE_KEY")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("destinations.cio.write_key" in e and "CIO_WRITE_KEY" in e for e in run.errors)


def test_mass_delete_is_refused_unless_allowed(workspace, emulator):
    assert workspace.sync().status == "success"
    workspace.sql("DELETE FROM contacts WHERE id > 'u000100'")  # 200 of 300
    run = workspace.sync()
    assert run.status == "failure"
    assert any("would delete 200 of 300 rows" in e for e in run.errors), run.errors
    assert workspace.store.head("contacts").rows == 300
    allowed = workspace.sync(allow_mass_delete=True)
    assert allowed.status == "success" and allowed.deleted == 200
    assert allowed.syncs["contacts_deleted"]["succeeded"] == 200


def test_empty_model_is_refused(workspace):
    assert workspace.sync().status == "success"
    workspace.sql("DELETE FROM contacts")
    run = workspace.sync()
    assert run.status == "failure"
    assert any("returned no rows" in e for e in run.errors)
    assert workspace.store.head("contacts").rows == 300


def test_project_file_typos_name_the_entry(workspace):
    replace_in_project(workspace, "primary_key: userId", "primary_kee: userId")
    with pytest.raises(ProjectError, match=r"models\.contacts\.primary_kee: unknown field"):
        workspace.project
