"""The engine with a BigQuery source: real Dagster runs reading the REST API's emulator (a
DuckDB file behind it), syncing to the Customer.io emulator."""

from __future__ import annotations

import duckdb

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.bigquery import BigQueryEmulator, build_bigquery_app

TOKEN = "ya29.e2e-token"

PROJECT = """
sources:
  warehouse:
    type: bigquery
    project: retl-test
    dataset: crm
    location: US
    access_token: {{env: BQ_TOKEN}}
    api_endpoint: {bq}
    retry_seconds: 10
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {cio}
models:
  people:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT CAST(id AS STRING) AS userId, email, score, seen_at
      FROM `retl-test.crm.people`
      WHERE seen_at >= TIMESTAMP_SECONDS(1767225600)
syncs:
  people_identify:
    model: people
    destination: cio
    action: identify
  people_deleted:
    model: people
    destination: cio
    action: track
    records: deleted
    mapping:
      userId: userId
      event: {{value: "Person Deleted"}}
"""


def run_sql(path, *statements: str) -> None:
    con = duckdb.connect(str(path))
    try:
        for s in statements:
            con.execute(s)
    finally:
        con.close()


def test_a_bigquery_source_syncs_changes(workspace, emulator, monkeypatch):
    database = workspace.root / "bigquery.duckdb"
    run_sql(database, "CREATE SCHEMA crm",
            "CREATE TABLE crm.people AS SELECT i AS id, 'p' || i || '@example.com' AS email, "
            "(i * 1.5)::DOUBLE AS score, TIMESTAMPTZ '2026-01-01 00:00:00+00' "
            "+ i * INTERVAL 1 hour AS seen_at FROM range(1, 501) t(i)",
            # Before the filter's TIMESTAMP_SECONDS(1767225600): never synced.
            "INSERT INTO crm.people VALUES (9999, 'old@example.com', 0, "
            "TIMESTAMPTZ '2025-06-01 00:00:00+00')")
    bigquery = BigQueryEmulator(database, tokens={TOKEN}, projects={"retl-test"},
                                allow={"crm.people"})
    monkeypatch.setenv("BQ_TOKEN", TOKEN)
    with EmulatorServer(build_bigquery_app(bigquery)) as server:
        workspace.write(PROJECT.format(bq=server.url, cio=emulator.url))
        first = workspace.sync("people")
        assert first.status == "success", first.errors
        assert first.added == 500
        profiles = emulator.state()["profiles"]
        assert "9999" not in profiles
        assert profiles["7"] == {"email": "p7@example.com", "score": 10.5,
                                 "seen_at": "2026-01-01T07:00:00.000Z"}
        assert bigquery.state()["stats"]["calls"]["jobs.query"] >= 1

        run_sql(database, "UPDATE crm.people SET score = 99 WHERE id = 7",
                "DELETE FROM crm.people WHERE id = 8",
                "INSERT INTO crm.people VALUES (501, 'new@example.com', 1, "
                "TIMESTAMPTZ '2026-03-01 00:00:00+00')")
        second = workspace.sync("people")
        assert second.status == "success", second.errors
        assert (second.added, second.updated, second.deleted) == (1, 1, 1)
        assert second.syncs["people_identify"]["sent"] == 2
        assert emulator.state()["profiles"]["7"]["score"] == 99
        deleted = [e["userId"] for e in emulator.state()["events"]
                   if e.get("event") == "Person Deleted"]
        assert deleted == ["8"]

        bigquery.allow = set()  # the grant is revoked: the run fails, naming the source
        broken = workspace.sync("people")
        assert broken.status == "failure"
        assert any("source 'warehouse'" in e and "Access Denied" in e
                   for e in broken.errors), broken.errors
