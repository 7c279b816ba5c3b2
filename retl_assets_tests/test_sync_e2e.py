"""The user's story, with real Dagster runs: a warehouse, syncs, and what the tool then holds.

How the engine behaves across runs (the same window, faults, full resyncs, fingerprints),
against the default project's Customer.io emulator; the five stories every destination tells
are in destinations/test_contract.py."""

from __future__ import annotations


def events_named(emulator, name: str) -> dict[str, dict]:
    return {e["userId"]: e for e in emulator.state()["events"] if e.get("event") == name}


def test_sync_again_in_the_same_window_sends_new_changes(workspace, emulator):
    a = workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = 'Zed' WHERE id = 'u000001'")
    b = workspace.sync()
    assert a.partition == b.partition
    assert b.updated == 1 and b.syncs["contacts_identify"]["succeeded"] == 1
    assert emulator.state()["profiles"]["u000001"]["first_name"] == "Zed"


def test_faults_lose_nothing_and_duplicates_are_dropped(workspace, emulator):
    emulator.set_faults(error_rate=0.2, rate_429=0.1, retry_after=0.05)
    # Smaller requests, so many of them meet the faults.
    text = (workspace.root / "retl.yaml").read_text().replace(
        "max_retries: 8", "max_retries: 12\n    batch_size: 100")
    (workspace.root / "retl.yaml").write_text(text)
    workspace.sql("""INSERT INTO contacts SELECT 'bulk-' || i, 'b' || i || '@example.com', 'B',
                     'free', 1, TIMESTAMP '2026-01-01' + INTERVAL (i) MINUTE
                     FROM range(4000) t(i)""")
    first = workspace.sync()
    assert first.status == "success", first.errors
    workspace.sql("UPDATE contacts SET plan = 'pro' WHERE id LIKE 'bulk-1%'")
    workspace.sql("DELETE FROM contacts WHERE id LIKE 'bulk-2%'")
    second = workspace.sync()
    assert second.status == "success", second.errors
    stats = emulator.state()["stats"]
    assert stats["status"].get("500", 0) + stats["status"].get("429", 0) > 0
    emulator.set_faults(error_rate=0, rate_429=0)
    third = workspace.sync()
    assert third.status == "success"
    profiles = emulator.state()["profiles"]
    model = workspace.model_rows()
    assert {k: profiles[k] for k in model} == model
    deleted = set(events_named(emulator, "Contact Deleted"))
    assert deleted == {f"bulk-{i}" for i in range(4000) if str(i).startswith("2")}
    assert emulator.state()["stats"]["contract_violations"] == []


def test_invalid_records_are_kept_with_the_reason(workspace, emulator):
    workspace.write((workspace.root / "retl.yaml").read_text().replace(
        'SELECT id AS "userId"',
        'SELECT CASE WHEN id = \'u000003\' THEN \'\' ELSE id END AS "anon", id AS "userId"'
    ).replace("records: added_or_updated", "records: added_or_updated\n    mapping:\n"
              "      userId: anon\n      traits.email: email"))
    run = workspace.sync()
    s = run.syncs["contacts_identify"]
    assert run.status == "success"
    assert (s["invalid"], s["owed"], s["succeeded"]) == (1, 1, 299)
    assert "u000003" not in emulator.state()["profiles"]


def test_full_resync_sends_every_row_again_as_new_messages(workspace, emulator):
    workspace.sync()
    accepted = emulator.state()["stats"]["messages_accepted"]
    again = workspace.sync(full_resync=True)
    assert again.status == "success"
    assert again.syncs["contacts_identify"]["succeeded"] == 300
    stats = emulator.state()["stats"]
    # New messageIds: the destination applies them instead of dropping them as duplicates.
    assert stats["messages_accepted"] - accepted == 300 and stats["duplicates"] == 0
    after = workspace.sync()  # and the cursor sits at the end again
    assert after.syncs["contacts_identify"]["sent"] == 0


def test_reordered_columns_or_a_new_fingerprint_algorithm_change_nothing(workspace, emulator):
    workspace.sync()
    store = workspace.store
    head = store.head("contacts")
    head.fingerprint = "some-older-duckdb"  # as if the base was hashed by another release
    # ...with fingerprints that no longer match what this release computes:
    import duckdb
    snap = store.model_dir("contacts") / head.snapshot
    duckdb.execute(f"COPY (SELECT * REPLACE (__retl_fp + 1 AS __retl_fp) "
                   f"FROM read_parquet('{snap}')) TO '{snap}.x' (FORMAT parquet)")
    snap.with_name(snap.name + ".x").replace(snap)
    store.write_head("contacts", head)
    (workspace.root / "retl.yaml").write_text((workspace.root / "retl.yaml").read_text().replace(
        'SELECT id AS "userId", email, first_name, plan, updated_at',
        'SELECT plan, updated_at, first_name, email, id AS "userId"'))
    run = workspace.sync()
    assert (run.added, run.updated, run.deleted, run.unchanged) == (0, 0, 0, 300)
