"""The contract every destination type passes: five stories, told once, each run against
every type's emulator through real Dagster runs, from the case it declares in cases.py.

1. The first sync equals the model.
2. A second sync sends exactly the changes, and a third nothing.
3. A record the vendor refuses is kept owed with the vendor's reason while the rest land;
   fixed in the warehouse, it lands on the next run.
4. 20,000 rows keep to the vendor's published limits.
5. A wrong credential stops the run at once and commits nothing.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

from retl_assets import vendors
from retl_assets.emulators import EmulatorServer
from retl_assets.inspect import test_connection as check_connection
from retl_assets_tests.destinations.cases import CASES, Case, Peak

PROJECT = """\
sources:
  warehouse: {type: duckdb, path: warehouse.duckdb}
destinations:
  KIND:
DESTINATION
models:
  contacts:
    source: warehouse
    primary_key: userId
    sql: SELECT id AS "userId", email, first_name, plan, updated_at COLUMNS FROM contacts
syncs:
SYNCS
"""

CHANGES = """
    INSERT INTO contacts VALUES ('n1', 'new.person@example.com', 'Nia', 'pro', 1,
                                 TIMESTAMP '2026-05-01 10:00:00');
    UPDATE contacts SET plan = 'enterprise' WHERE id = 'u000010';
    DELETE FROM contacts WHERE id IN ('u000020', 'u000021');
"""
REFUSED = ("u000005", "u000050")
FIXED = "UPDATE contacts SET email = 'fixed.' || id || '@example.com' WHERE id = '{key}'"


def render(case: Case, url: str, extra: list[str]) -> str:
    lines = textwrap.dedent(case.destination).strip().replace("{url}", url)
    lines = "\n".join([lines, *extra])
    return (PROJECT.replace("KIND", case.kind)
            .replace("DESTINATION", textwrap.indent(lines, "    "))
            .replace("COLUMNS", case.columns)
            .replace("SYNCS", textwrap.indent(textwrap.dedent(case.syncs).strip(), "  ")))


@dataclass
class Destination:
    """A case's emulator, serving, with the workspace's project pointed at it."""

    case: Case
    ws: Any
    emu: Any
    knobs: dict[str, Any]

    def held(self) -> dict[str, dict]:
        return self.case.read(self.emu, self.ws)

    def model(self) -> dict[str, dict]:
        return self.case.expected(self.ws)

    def stats(self) -> dict[str, Any]:
        return self.emu.state()["stats"]

    def owed(self) -> dict[str, str]:
        return self.ws.owed(self.case.sync)


@pytest.fixture(params=vendors.destination_types())
def case(request) -> Case:
    found = CASES.get(request.param)
    if found is None:
        pytest.fail(f"destination type {request.param!r} has no case in "
                    f"retl_assets_tests/destinations/cases.py")
    return found


@pytest.fixture
def start(case, workspace, monkeypatch):
    """Start the case's emulator and write its project: start(paced=..., extra=[lines],
    faults={...}, **emulator knobs) -> Destination."""
    servers: list[EmulatorServer] = []

    def _start(paced: bool = True, extra: str = "", faults: dict | None = None,
               **knobs) -> Destination:
        pace = case.pace if paced else None
        lines = [f'rate_limit: "{pace[0]}/{pace[1]}"'] if pace else []
        lines += [line for line in extra.splitlines() if line]
        app = case.serve(pace=pace, **knobs)
        servers.append(EmulatorServer(app).start())
        path = workspace.write(render(case, servers[-1].url, lines))
        monkeypatch.setenv(case.env, case.secret)
        monkeypatch.setenv("RETL_PROJECT", str(path))
        emu = app.state.emulator
        if faults:
            emu.set_faults(**faults)
        return Destination(case, workspace, emu, {"pace": pace, **knobs})

    yield _start
    for server in servers:
        server.stop()


def moved(before: dict, after: dict, counters: dict[str, int]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in counters}


def totals(run, *names: str) -> tuple[int, ...]:
    """Over every sync of the model (a type may take deletes in a sync of their own)."""
    return tuple(sum(s[name] or 0 for s in run.syncs.values()) for name in names)


def within(peaks: list[Peak], reached: bool = False) -> None:
    for peak in peaks:
        assert peak.seen <= peak.limit, f"{peak.what}: {peak.seen}, over the limit {peak.limit}"
        if reached:
            assert peak.seen >= peak.least, f"{peak.what}: {peak.seen}, never reached {peak.least}"


def clean(stats: dict[str, Any]) -> None:
    """Every answer a success (no 429, no 4xx, no 5xx) and no contract broken."""
    assert all(code.startswith("2") for code in stats["status"]), stats["status"]
    assert stats.get("contract_violations", []) == []


def test_every_registered_destination_type_has_a_case():
    assert set(CASES) == set(vendors.destination_types())
    for kind, case in CASES.items():
        # Pointed at the emulator, the credential from the environment, the sync named.
        assert case.kind == kind and f"type: {kind}" in case.destination, kind
        assert "{url}" in case.destination and f"{{env: {case.env}}}" in case.destination, kind
        assert f"{case.sync}:" in case.syncs, kind
        assert "requests" in case.first and "requests" in case.second, kind


def test_the_first_sync_equals_the_model(start):
    dest = start(paced=False)  # the vendor's own published pace, on both sides
    run = dest.ws.sync()
    assert run.status == "success", run.errors
    assert (run.rows, run.added, run.updated, run.deleted) == (300, 300, 0, 0)
    s = run.syncs[dest.case.sync]
    assert (s["sent"], s["succeeded"], s["failed"], s["unsent"], s["owed"]) == (300, 300, 0, 0, 0)
    assert totals(run, "sent") == (300,)  # a sync of the deletes has none to send
    assert dest.held() == dest.model()
    stats = dest.stats()
    assert moved({}, stats, dest.case.first) == dest.case.first
    clean(stats)
    within(dest.case.peaks(stats, dest.knobs))


def test_a_second_sync_sends_exactly_the_changes_and_a_third_nothing(start):
    dest = start()
    assert dest.ws.sync().status == "success"
    dest.ws.sql(CHANGES)
    before = dest.stats()
    second = dest.ws.sync()
    assert second.status == "success", second.errors
    assert (second.added, second.updated, second.deleted, second.unchanged) == (1, 1, 2, 297)
    assert totals(second, "sent", "succeeded", "failed", "owed") == (4, 4, 0, 0)
    assert dest.held() == dest.model()
    after = dest.stats()
    assert moved(before, after, dest.case.second) == dest.case.second
    clean(after)

    third = dest.ws.sync()  # nothing changed: nothing sent, nothing asked
    assert third.status == "success", third.errors
    assert third.unchanged == 299 and totals(third, "sent") == (0,)
    assert dest.stats()["requests"] == after["requests"]
    assert dest.held() == dest.model()


def test_a_record_the_vendor_refuses_is_kept_owed_and_lands_once_fixed(case, start):
    refusal = case.refusal
    dest = start(extra=refusal.destination, faults=refusal.faults)
    for key in REFUSED:  # one in the first request, one in a later one where batches are small
        dest.ws.sql(refusal.sql.format(key=key))
    run = dest.ws.sync()
    assert run.status == "success", run.errors  # a refused row alone does not fail the run
    s = run.syncs[case.sync]
    assert (s["sent"], s["succeeded"], s["rejected"], s["failed"], s["owed"]) == (
        300, 298, 2, 2, 2)
    model = dest.model()
    assert dest.held() == {k: v for k, v in model.items() if k not in REFUSED}  # the rest land
    owed = dest.owed()
    assert set(owed) == set(REFUSED)
    for key, why in owed.items():
        assert re.fullmatch("rejected: " + refusal.reason.replace("{key}", key), why), why
    stats = dest.stats()
    assert stats["requests"] <= refusal.requests
    assert "429" not in stats["status"], stats["status"]  # refusals are not retried blindly

    again = dest.ws.sync()  # still refused: sent again, and still owed
    s = again.syncs[case.sync]
    assert (s["sent"], s["succeeded"], s["rejected"], s["owed"]) == (2, 0, 2, 2)
    assert set(dest.owed()) == set(REFUSED)

    for key in REFUSED:
        dest.ws.sql(FIXED.format(key=key))
    fixed = dest.ws.sync()
    assert fixed.status == "success", fixed.errors
    s = fixed.syncs[case.sync]
    assert (s["sent"], s["succeeded"], s["failed"], s["owed"]) == (2, 2, 0, 0)
    assert dest.owed() == {}
    assert dest.held() == dest.model()


def test_twenty_thousand_rows_keep_to_the_published_rate(case, start):
    rate = case.rate
    dest = start(extra=rate.destination, faults=rate.faults, **rate.knobs)
    dest.ws.add_bulk_contacts(rate.rows - 300)
    run = dest.ws.sync()
    assert run.status == "success", run.errors
    s = run.syncs[case.sync]
    assert (s["sent"], s["succeeded"], s["owed"]) == (rate.rows, rate.rows, 0)
    assert dest.held() == dest.model()
    stats = dest.stats()
    clean(stats)  # no 429: the client kept to the limit, the vendor never had to say so
    within(case.peaks(stats, dest.knobs), reached=True)
    if rate.requests is not None:
        assert stats["requests"] == rate.requests


def test_a_wrong_credential_stops_the_run_at_once_and_commits_nothing(case, start, monkeypatch):
    dest = start()
    ok, said = check_connection(case.kind)  # retl test-connection: the cheapest read-only call
    assert ok, said
    assert dest.held() == {}  # ...which wrote nothing
    monkeypatch.setenv(case.env, "wrong-credential")
    state = dest.ws.store
    if case.undetectable_credential:
        # What is true instead: the vendor takes the records and drops them.
        ok, said = check_connection(case.kind)
        assert ok and "cannot be confirmed" in said, said
        run = dest.ws.sync()
        assert run.status == "success", run.errors
        s = run.syncs[case.sync]
        assert (s["sent"], s["succeeded"], s["owed"]) == (300, 300, 0)
        assert dest.held() == {} and dest.stats()[case.refusal_counter] >= 1
        monkeypatch.setenv(case.env, case.secret)
        assert totals(dest.ws.sync(), "sent") == (0,)  # delivered, as far as retl can know
        return

    ok, said = check_connection(case.kind)
    assert not ok and "refused the credentials" in said, said
    asked = dest.stats()["requests"]
    run = dest.ws.sync()
    assert run.status == "failure"
    assert any(f"'{case.kind}' refused the credentials" in e and case.refused_says in e
               for e in run.errors), run.errors
    assert "wrong-credential" not in " ".join(run.errors)
    assert all(not s.get("succeeded") for s in run.syncs.values()), run.syncs
    assert dest.held() == {}
    stats = dest.stats()
    asked = stats["requests"] - asked
    assert 1 <= asked <= 4, asked  # stopped at the first answers
    if case.refusal_counter:
        assert stats[case.refusal_counter] >= 1, stats
    assert state.sync_state(case.sync).cursor is None
    checkpoint = state.checkpoint_path(case.sync)
    assert not checkpoint.exists() or checkpoint.read_text() == ""

    monkeypatch.setenv(case.env, case.secret)  # nothing was counted delivered: all of it goes
    again = dest.ws.sync()
    assert again.status == "success", again.errors
    assert again.syncs[case.sync]["succeeded"] == 300
    assert dest.held() == dest.model()
