"""`retl errors`: the rows a sync owes, with the destination's error, the payload, the
attempts and what to do; and the same rows as the sync asset's `errors` table."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from retl_assets.cli import main
from retl_assets.rejects import (
    CONNECTION,
    INVALID_VALUE,
    MISSING,
    NO_OBJECT,
    OTHER,
    RATE_LIMITED,
    UNCONFIRMED,
    classify,
)
from retl_assets_tests.conftest import WRITE_KEY

SYNC = "contacts_identify"
INVALID = {"u000003", "u000004", "u000005"}  # no userId: retl's own check refuses them
POISONED = {"u000010", "u000011"}  # the destination refuses them


def owe_rows(ws, emulator):
    """A sync that maps userId from a column left empty for three rows, against a
    destination that refuses two others; run twice, so every owed row was tried twice."""
    empty = ", ".join(f"'{k}'" for k in sorted(INVALID))
    ws.write((ws.root / "retl.yaml").read_text().replace(
        'SELECT id AS "userId"',
        f'SELECT CASE WHEN id IN ({empty}) THEN \'\' ELSE id END AS "anon", id AS "userId"'
    ).replace("records: added_or_updated", "records: added_or_updated\n    mapping:\n"
              "      userId: anon\n      traits.email: email\n      traits.plan: plan"))
    ws.sql(f"UPDATE contacts SET plan = 'poison' WHERE id IN "
           f"({', '.join(repr(k) for k in sorted(POISONED))})")
    emulator.set_faults(poison={"path": "traits.plan", "value": "poison"})
    for _ in range(2):
        run = ws.sync()
        assert run.syncs[SYNC]["owed"] == 5, run.syncs
    return run


def errors_json(ws, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["--project", str(ws.root / "retl.yaml"), "errors", SYNC, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_errors_shows_and_exports_each_owed_row_with_payload_attempts_and_action(
        workspace, emulator, capsys, tmp_path):
    owe_rows(workspace, emulator)
    out = errors_json(workspace, capsys, "--csv", str(tmp_path / "owed.csv"),
                      "--jsonl", str(tmp_path / "owed.jsonl"))
    assert out["owed"] == 5 and out["statuses"] == {"invalid": 3, "rejected": 2}
    rows = {r["key"]: r for r in out["rows"]}
    assert set(rows) == INVALID | POISONED
    email = dict(workspace.sql("SELECT id, email FROM contacts"))
    for key in INVALID:
        r = rows[key]
        assert (r["status"], r["kind"], r["attempts"]) == ("invalid", MISSING, 2)
        assert r["error"] == "identify needs userId or anonymousId"
        # The payload as the sync builds it: the empty identifier is what is wrong.
        assert r["payload"]["userId"] == "" and r["payload"]["type"] == "identify"
        assert r["payload"]["traits"]["email"] == email[key]
        assert "`anon` is NULL or empty" in r["action"]
    for key in POISONED:
        r = rows[key]
        assert (r["status"], r["attempts"]) == ("rejected", 2)
        assert "message refused by the destination" in r["error"]
        assert r["payload"]["userId"] == key and r["payload"]["traits"]["plan"] == "poison"
        assert r["payload"]["messageId"] == r["msgid"]
        assert r["action"]
    # Grouped by cause, with counts and a plain-words action.
    causes = {c["kind"]: c for c in out["causes"]}
    missing = causes[MISSING]
    assert missing["rows"] == 3 and missing["keys"] == sorted(INVALID)
    assert missing["action"].startswith("`anon` is NULL or empty for 3 rows; cio (customerio) "
                                        "needs it as userId to match the record")
    assert "filter such rows out in model 'contacts'" in missing["action"]
    refused = causes[OTHER]
    assert refused["rows"] == 2 and refused["keys"] == sorted(POISONED)
    assert refused["action"].startswith("cio refused 2 rows (HTTP 400")
    assert sum(c["rows"] for c in out["causes"]) == 5
    assert errors_json(workspace, capsys, "--limit", "2")["rows"] == out["rows"][:2]

    # The files the user asked for hold every row, the same in both.
    assert out["written"] == {str(tmp_path / "owed.csv"): 5, str(tmp_path / "owed.jsonl"): 5}
    with open(tmp_path / "owed.csv", newline="") as f:
        from_csv = {r["key"]: r for r in csv.DictReader(f)}
    from_jsonl = {r["key"]: r for r in map(json.loads, (tmp_path / "owed.jsonl").open())}
    assert set(from_csv) == set(from_jsonl) == INVALID | POISONED
    for key, r in from_jsonl.items():
        c = from_csv[key]
        assert json.loads(c["payload"]) == r["payload"] and r["payload"]["userId"] is not None
        assert (c["kind"], c["error"], int(c["attempts"]), c["action"]) == (
            r["kind"], r["error"], r["attempts"], r["action"])
    assert {r["key"]: r["payload"] for r in out["rows"]} == {
        k: r["payload"] for k, r in from_jsonl.items()}

    # As a user runs it, in its own process, where the destination's key is not set.
    env = {k: v for k, v in os.environ.items() if k != "CIO_WRITE_KEY"}
    run = subprocess.run(
        [sys.executable, "-m", "retl_assets.cli", "errors", SYNC, "--limit", "10"],
        env={**env, "RETL_PROJECT": str(workspace.root / "retl.yaml")}, capture_output=True,
        text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr
    assert f"sync {SYNC} owes 5 rows (3 invalid, 2 rejected)" in run.stdout
    assert "3  missing required field: `anon` is NULL or empty for 3 rows" in run.stdout
    assert all(k in run.stdout for k in INVALID | POISONED)
    assert WRITE_KEY not in run.stdout + run.stderr


def test_a_sync_that_owes_nothing_says_so_and_an_unknown_one_is_named(workspace, capsys):
    assert workspace.sync().status == "success"
    out = errors_json(workspace, capsys)
    assert (out["owed"], out["rows"], out["causes"]) == (0, [], [])
    assert main(["--project", str(workspace.root / "retl.yaml"), "errors", "nope"]) == 2
    assert "no sync named 'nope' (syncs: contacts_identify, contacts_deleted)" in \
        capsys.readouterr().err


def errors_table(ws, run_id: str):
    records = ws.instance.get_records_for_run(run_id).records
    mats = [r.event_log_entry.dagster_event.event_specific_data.materialization
            for r in records if r.event_log_entry.dagster_event is not None
            and r.event_log_entry.dagster_event.event_type_value == "ASSET_MATERIALIZATION"]
    mat = next(m for m in mats if m.asset_key.path[-1] == SYNC)
    return mat.metadata["errors"]


def test_the_sync_assets_errors_table_masks_payloads_unless_samples_full(workspace, emulator):
    table = errors_table(workspace, owe_rows(workspace, emulator).run_id)
    rows = {r.data["key"]: r.data for r in table.records}
    assert set(rows) == INVALID | POISONED
    assert {c.name for c in table.schema.columns} == {"key", "kind", "status", "error",
                                                      "attempts", "action", "payload"}
    some = rows["u000003"]
    assert (some["kind"], some["attempts"]) == (MISSING, 2) and "`anon`" in some["action"]
    masked = json.loads(some["payload"])
    assert masked["traits"]["email"].startswith("<text, ") and "@" not in some["payload"]

    (workspace.root / "retl.yaml").write_text(
        "samples: full\n" + (workspace.root / "retl.yaml").read_text())
    rows = {r.data["key"]: r.data for r in errors_table(
        workspace, workspace.sync().run_id).records}
    email = dict(workspace.sql("SELECT id, email FROM contacts"))
    assert json.loads(rows["u000003"]["payload"])["traits"]["email"] == email["u000003"]


def test_kinds_are_named_as_the_vendors_name_them():
    assert classify("invalid", "identify needs userId or anonymousId") == MISSING
    assert classify("invalid", "no value for the match field email (map a column)") == MISSING
    assert classify("rejected", "HTTP 400: Property values were not valid: bad email") == \
        INVALID_VALUE
    assert classify("rejected", "object type 'p_widget' not found") == NO_OBJECT
    assert classify("unsent", "'cio' could not be reached: connection refused") == CONNECTION
    assert classify("unsent", "HTTP 429: rate limit exceeded") == RATE_LIMITED
    assert classify("unconfirmed", "the destination's answer did not confirm this record") == \
        UNCONFIRMED
    assert classify("rejected", "HTTP 400 invalid_request: message refused") == OTHER
    assert classify("rejected", "INVALID_EMAIL_ADDRESS: Email: invalid email address") == \
        INVALID_VALUE
    assert classify("rejected", "Required fields are missing: [LastName]") == MISSING
    assert classify("rejected", "INVALID_TYPE: sObject type 'Widget__c' is not supported") == \
        NO_OBJECT
