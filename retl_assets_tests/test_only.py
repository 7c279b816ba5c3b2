"""`retl sync SYNC --only KEY`: one chosen record sent now, everything else left as it was."""

from __future__ import annotations

import json

from retl_assets.cli import main
from retl_assets_tests.test_dry_run import state_files


def only(ws, monkeypatch, capsys, *args: str) -> tuple[int, dict]:
    monkeypatch.setenv("RETL_PROJECT", str(ws.root / "retl.yaml"))
    capsys.readouterr()
    code = main(["sync", "contacts_identify", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_one_changed_record_is_sent_now_and_its_regular_run_repeats_it_harmlessly(
        workspace, emulator, monkeypatch, capsys):
    workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = 'Zed' WHERE id IN ('u000001', 'u000002')")
    before = state_files(workspace)

    code, one = only(workspace, monkeypatch, capsys, "--only", "u000001")

    assert code == 0 and (one["status"], one["change"]) == ("delivered", "updated")
    assert json.loads(one["payload"])["traits"]["first_name"] == "Zed"
    assert "same idempotency key" in one["regular_run"]
    state = emulator.state()
    assert state["profiles"]["u000001"]["first_name"] == "Zed"
    assert state["profiles"]["u000002"]["first_name"] != "Zed"  # only the one chosen
    assert state_files(workspace) == before  # no snapshot, cursor or ledger moved

    run = workspace.sync()
    s = run.syncs["contacts_identify"]
    assert (s["sent"], s["succeeded"]) == (2, 2)  # the regular run still sends it...
    stats = emulator.state()["stats"]
    assert stats["duplicates"] == 1  # ...under the same messageId, which the vendor drops
    assert one["idempotency_key"] in emulator.seen_message_ids


def test_an_unchanged_record_is_sent_and_said_to_be_left_alone_by_the_regular_run(
        workspace, emulator, monkeypatch, capsys):
    workspace.sync()
    accepted = emulator.state()["stats"]["messages_accepted"]
    code, one = only(workspace, monkeypatch, capsys, "--only", "u000007")
    assert code == 0 and (one["status"], one["change"]) == ("delivered", "unchanged")
    assert "will not send it again" in one["regular_run"]
    assert emulator.state()["stats"]["messages_accepted"] == accepted + 1


def test_a_key_not_in_the_model_says_so(workspace, emulator, monkeypatch, capsys):
    workspace.sync()
    accepted = emulator.state()["stats"]["messages_accepted"]
    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    capsys.readouterr()
    assert main(["sync", "contacts_identify", "--only", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "key 'nobody' is not in model 'contacts'" in err and "nothing was sent" in err
    assert emulator.state()["stats"]["messages_accepted"] == accepted


def test_a_composite_key_is_given_joined_by_a_bar(workspace, emulator, monkeypatch, capsys):
    workspace.write((workspace.root / "retl.yaml").read_text().replace(
        "primary_key: userId", "primary_key: [userId, plan]"))
    plan = workspace.sql("SELECT plan FROM contacts WHERE id = 'u000003'")[0][0]
    workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = 'Zoe' WHERE id = 'u000003'")
    code, one = only(workspace, monkeypatch, capsys, "--only", f"u000003|{plan}")
    assert code == 0 and one["status"] == "delivered" and one["key"] == f"u000003|{plan}"
    assert emulator.state()["profiles"]["u000003"]["first_name"] == "Zoe"
    # The same key given one column at a time.
    code, again = only(workspace, monkeypatch, capsys, "--only", "u000003", "--only", plan)
    assert code == 0 and again["idempotency_key"] == one["idempotency_key"]
    assert main(["sync", "contacts_identify", "--only", "u000003"]) == 2
    assert "give --only <userId>|<plan>" in capsys.readouterr().err
