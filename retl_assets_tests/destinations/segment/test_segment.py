"""Customer.io and Segment: what is theirs alone (the five stories every destination tells
are in destinations/test_contract.py). The workspace's default project (conftest.py) syncs
to a Customer.io emulator."""

from __future__ import annotations

import duckdb


def test_oversize_row_is_refused_before_sending_and_kept(workspace, emulator):
    workspace.sync()
    workspace.sql("UPDATE contacts SET first_name = repeat('x', 40000) WHERE id = 'u000009'")
    workspace.sql("UPDATE contacts SET plan = 'pro' WHERE id = 'u000010'")
    run = workspace.sync()
    s = run.syncs["contacts_identify"]
    assert (s["sent"], s["succeeded"], s["invalid"], s["owed"]) == (1, 1, 1, 1)
    assert emulator.state()["stats"]["contract_violations"] == []
    assert emulator.state()["profiles"]["u000010"]["plan"] == "pro"
    ledger = workspace.store.ledger_path("contacts_identify",
                                         workspace.store.sync_state("contacts_identify"))
    reason = duckdb.sql(f"SELECT __retl_error FROM read_parquet('{ledger}')").fetchall()[0][0]
    assert "over the 32 KB limit" in reason
