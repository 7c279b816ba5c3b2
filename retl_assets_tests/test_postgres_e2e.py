"""The same engine against a real PostgreSQL server started by the tests."""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as pg

PROJECT = """
sources:
  warehouse:
    type: postgres
    dsn: {{env: WAREHOUSE_DSN}}
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {url}
models:
  people:
    source: warehouse
    primary_key: [tenant, id]
    sql: SELECT tenant, id, id::text AS "userId", email, score, seen_at FROM people
syncs:
  people_identify:
    model: people
    destination: cio
    action: identify
"""


def run_sql(dsn: str, *statements: str) -> None:
    with pg.connect(dsn) as con:
        cur = con.cursor()
        for s in statements:
            cur.execute(s)
        con.commit()


def test_postgres_source_syncs_changes(workspace, emulator, postgres_server, monkeypatch):
    dsn = postgres_server.dsn
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    run_sql(dsn, "DROP TABLE IF EXISTS people",
            "CREATE TABLE people (tenant int, id int, email text, score numeric(8,2), "
            "seen_at timestamptz)",
            "INSERT INTO people SELECT 1, g, 'p' || g || '@example.com', g * 1.5, "
            "'2026-01-01T00:00:00Z'::timestamptz + g * interval '1 hour' "
            "FROM generate_series(1, 500) g")
    workspace.write(PROJECT.format(url=emulator.url))
    first = workspace.sync("people")
    assert first.status == "success", first.errors
    assert first.added == 500
    profile = emulator.state()["profiles"]["7"]
    assert profile == {"tenant": 1, "id": 7, "email": "p7@example.com", "score": 10.5,
                       "seen_at": "2026-01-01T07:00:00.000Z"}

    run_sql(dsn, "UPDATE people SET score = 99 WHERE id = 7", "DELETE FROM people WHERE id = 8",
            "INSERT INTO people VALUES (2, 1, 'x@example.com', 1, now())")
    second = workspace.sync("people")
    assert (second.added, second.updated, second.deleted) == (1, 1, 1)
    assert second.syncs["people_identify"]["sent"] == 2
    assert emulator.state()["profiles"]["7"]["score"] == 99

    run_sql(dsn, "ALTER TABLE people RENAME COLUMN email TO mail")
    broken = workspace.sync("people")
    assert broken.status == "failure"
    assert any("source 'warehouse'" in e and "email" in e for e in broken.errors), broken.errors
