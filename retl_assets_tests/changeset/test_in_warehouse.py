"""`diff: in_warehouse` must find exactly the changes the local diff finds, on every engine it
runs on: inserts, updates, deletes, NULLs both ways, a type change and composite keys."""

from __future__ import annotations

from pathlib import Path

import uuid

import adbc_driver_postgresql.dbapi as pg
import duckdb
import pytest

from retl_assets.project import load_project
from retl_assets.runner import sync_model
from retl_assets.state.store import OP, SEQ, StateStore
from retl_assets_tests.conftest import free_port

PROJECT = """
sources:
  wh:
    type: {kind}
    {where}
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {url}
models:
  people:
    source: wh
    primary_key: [tenant, id]
    diff: {diff}
    sql: {sql}
syncs:
  people_identify:
    model: people
    destination: cio
    action: identify
    mapping: {{userId: uid, email: email, score: score}}
  people_gone:
    model: people
    destination: cio
    action: track
    records: deleted
    mapping: {{userId: uid, event: {{value: gone}}}}
state_dir: {state}
"""

SQL = "SELECT tenant, id, tenant || '-' || id AS uid, email, score, note FROM people"
TYPE_CHANGED = ("SELECT tenant, id, tenant || '-' || id AS uid, email, "
                "CAST(score AS VARCHAR) AS score, note FROM people")
# Snowflake answers unquoted names in upper case: the seed users alias them quoted.
SNOWFLAKE = {
    SQL: 'SELECT tenant AS "tenant", id AS "id", tenant || \'-\' || id AS "uid", '
         'email AS "email", score AS "score", note AS "note" FROM people',
    TYPE_CHANGED: 'SELECT tenant AS "tenant", id AS "id", tenant || \'-\' || id AS "uid", '
                  'email AS "email", CAST(score AS VARCHAR) AS "score", note AS "note" '
                  'FROM people',
}

# Each step changes the warehouse, then both modes run; their changesets must be equal.
STEPS = [
    ("first run", []),
    ("insert, update, delete", [
        "INSERT INTO people VALUES (3, 1, 'new@example.com', 5, 'n')",
        "UPDATE people SET email = 'changed@example.com' WHERE tenant = 1 AND id = 2",
        "DELETE FROM people WHERE tenant = 2 AND id = 3"]),
    ("values become NULL and NULLs become values", [
        "UPDATE people SET note = NULL WHERE tenant = 1 AND id = 4",
        "UPDATE people SET note = 'was null' WHERE tenant = 1 AND id = 5",
        "UPDATE people SET score = NULL WHERE tenant = 2 AND id = 1"]),
    ("same id in another tenant (composite key)", [
        "DELETE FROM people WHERE tenant = 1 AND id = 6",
        "INSERT INTO people VALUES (3, 6, 'six@example.com', 6, 'x')"]),
    ("nothing changed", []),
]


def _rows(execute) -> None:
    execute("DROP TABLE IF EXISTS people")
    execute("CREATE TABLE people (tenant INTEGER, id INTEGER, email VARCHAR, score INTEGER, "
            "note VARCHAR)")
    execute("INSERT INTO people SELECT t, i, 'p' || t || '-' || i || '@example.com', t * i, "
            "CASE WHEN i % 5 = 0 THEN NULL ELSE 'note ' || i END "
            "FROM (SELECT 1 AS t UNION ALL SELECT 2) ts CROSS JOIN "
            "(SELECT 1 AS i UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 "
            "UNION ALL SELECT 5 UNION ALL SELECT 6) ids")


class Engine:
    def __init__(self, kind: str, tmp: Path, server=None, snowflake=None):
        self.kind, self.tmp, self.server, self.snowflake = kind, tmp, server, snowflake

    @property
    def where(self) -> str:
        if self.kind == "duckdb":
            return f"path: {self.tmp / 'wh.duckdb'}"
        if self.kind == "snowflake":
            return self.snowflake[0].strip()
        return "dsn: {env: WAREHOUSE_DSN}"

    def query(self, sql: str) -> str:
        return SNOWFLAKE[sql] if self.kind == "snowflake" else sql

    def execute(self, sql: str) -> None:
        if self.kind == "snowflake":
            self.snowflake[1](sql)
            return
        if self.kind == "duckdb":
            con = duckdb.connect(str(self.tmp / "wh.duckdb"))
            try:
                con.execute(sql)
            finally:
                con.close()
            return
        with pg.connect(self.server.dsn) as con:
            con.cursor().execute(sql)
            con.commit()

    def state_tables(self) -> list[str]:
        if self.kind == "snowflake":
            return sorted(r[0] for r in self.snowflake[2](
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'retl_state'"))
        if self.kind == "duckdb":
            con = duckdb.connect(str(self.tmp / "wh.retl_state.people.duckdb"), read_only=True)
            try:
                return sorted(r[0] for r in con.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'retl_state'").fetchall())
            finally:
                con.close()
        with pg.connect(self.server.dsn) as con:
            cur = con.cursor()
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = 'retl_state' ORDER BY 1")
            return [r[0] for r in cur.fetchall()]


@pytest.fixture(params=["duckdb", "postgres", "snowflake"])
def engine(request, tmp_path, monkeypatch):
    server = None
    if request.param == "snowflake":
        from retl_assets_tests.sources.snowflake import test_snowflake as sf

        database = f"DB_{uuid.uuid4().hex[:10]}".upper()
        monkeypatch.setenv("SF_WH_PASSWORD", sf.PASSWORD)
        with sf.serve(sf.guarded_app(), free_port()) as port:
            fields = (f"account: retltest\n    user: retl\n"
                      "    password: {env: SF_WH_PASSWORD}\n"
                      f"    database: {database}\n    schema: PUBLIC\n    host: 127.0.0.1\n"
                      f"    port: {port}\n    protocol: http\n    network_timeout: 20")
            e = Engine("snowflake", tmp_path, snowflake=(
                fields, lambda sql: sf.run(port, database, sql),
                lambda sql: sf.fetch(port, database, sql)))
            _rows(e.execute)
            yield e
        return
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        monkeypatch.setenv("WAREHOUSE_DSN", server.dsn)
        with pg.connect(server.dsn) as con:
            con.cursor().execute("DROP SCHEMA IF EXISTS retl_state CASCADE")
            con.commit()
    e = Engine(request.param, tmp_path, server)
    _rows(e.execute)
    yield e


def _write(engine: Engine, diff: str, sql: str, url: str) -> Path:
    import json

    path = engine.tmp / f"{diff}.yaml"
    path.write_text(PROJECT.format(kind=engine.kind, where=engine.where, diff=diff,
                                   sql=json.dumps(sql), url=url,
                                   state=engine.tmp / f"state-{diff}"))
    return path


def _changeset(project, seq: int) -> list[tuple]:
    """The changeset's rows as the syncs take them, without the fingerprint (each engine
    spells its own), in key order."""
    store = StateStore(project.state_dir)
    log = store.log_path("people", seq)
    rel = duckdb.sql(f"SELECT * EXCLUDE (__retl_fp) FROM read_parquet('{log}') ORDER BY tenant, id")
    assert rel.columns[:2] == [OP, SEQ]
    return [tuple(str(v) for v in row) for row in rel.fetchall()]


def test_in_warehouse_diff_equals_the_local_diff(engine, instance, emulator, monkeypatch):
    monkeypatch.setenv("CIO_WRITE_KEY", "test-write-key")
    steps = STEPS + [("a column changes type", [])]
    for i, (what, statements) in enumerate(steps, start=1):
        for sql in statements:
            engine.execute(sql)
        query = engine.query(TYPE_CHANGED if what == "a column changes type" else SQL)
        runs = {}
        for diff in ("local", "in_warehouse"):
            project = load_project(_write(engine, diff, query, emulator.url))
            run = sync_model(project, "people", instance=instance)
            assert run.status == "success", (what, diff, run.errors)
            runs[diff] = (project, run)
        (local, a), (remote, b) = runs["local"], runs["in_warehouse"]
        assert (a.added, a.updated, a.deleted, a.unchanged) == \
               (b.added, b.updated, b.deleted, b.unchanged), what
        if i > 1:  # the first changeset of both is the snapshot itself
            assert _changeset(local, i) == _changeset(remote, i), what
        assert a.syncs["people_identify"]["sent"] == b.syncs["people_identify"]["sent"], what
        assert a.syncs["people_gone"]["sent"] == b.syncs["people_gone"]["sent"], what
    # Only the committed snapshot and its changeset stay; every staged table is gone.
    assert engine.state_tables() == [f"people__changeset_v{len(steps)}",
                                     f"people__snapshot_v{len(steps)}"]
    # The counts each step should have found, so equal-but-wrong would fail too.
    assert (a.updated, b.updated) == (12 - 1, 12 - 1)  # every row but the NULL score's


def test_a_failed_in_warehouse_diff_leaves_the_committed_tables_as_they_were(
        engine, instance, emulator, monkeypatch):
    monkeypatch.setenv("CIO_WRITE_KEY", "test-write-key")
    project = load_project(_write(engine, "in_warehouse", engine.query(SQL), emulator.url))
    assert sync_model(project, "people", instance=instance).status == "success"
    before = engine.state_tables()
    head = StateStore(project.state_dir).head("people")
    engine.execute("DELETE FROM people WHERE id <= 4")  # 8 of 12: over max_delete_fraction
    run = sync_model(project, "people", instance=instance)
    assert run.status == "failure"
    assert any("would delete 8 of 12 rows" in e for e in run.errors), run.errors
    assert StateStore(project.state_dir).head("people") == head
    after = engine.state_tables()
    assert [t for t in after if not t.startswith("people__staged_")] == before
    engine.execute("INSERT INTO people VALUES (1, 1, 'back@example.com', 1, 'b')")
    run = sync_model(project, "people", instance=instance, allow_mass_delete=True)
    assert run.status == "success" and run.deleted == 7, run.errors


def test_only_changed_rows_leave_the_warehouse(engine, instance, emulator, monkeypatch):
    monkeypatch.setenv("CIO_WRITE_KEY", "test-write-key")
    project = load_project(_write(engine, "in_warehouse", engine.query(SQL), emulator.url))
    assert sync_model(project, "people", instance=instance).status == "success"
    store = StateStore(project.state_dir)
    assert store.head("people").full is not None  # the first run brings every row out once
    engine.execute("UPDATE people SET email = 'x@example.com' WHERE tenant = 1 AND id = 1")
    run = sync_model(project, "people", instance=instance)
    assert (run.added, run.updated, run.deleted) == (0, 1, 0)
    head = store.head("people")
    assert head.full is None and head.snapshot.startswith("warehouse:")
    # No local snapshot at all: only the two changesets, the second holding the one change.
    # Changeset 1 was consumed by every sync, so compaction folded it away.
    assert sorted(store.model_dir("people").rglob("*.parquet")) == [store.log_path("people", 2)]
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{store.log_path('people', 2)}')"
                      ).fetchall()[0][0] == 1


def test_the_loader_refuses_what_the_in_warehouse_diff_cannot_do(tmp_path):
    from retl_assets.errors import ProjectError

    def project(kind: str, model: str, sql: str) -> Path:
        where = {"duckdb": "path: w.duckdb", "bigquery": "project: p"}[kind]
        path = tmp_path / "retl.yaml"
        path.write_text(f"sources:\n  wh: {{type: {kind}, {where}}}\nmodels:\n  {model}:\n"
                        f"    source: wh\n    primary_key: id\n    diff: in_warehouse\n"
                        f"    sql: {sql}\n")
        return path

    with pytest.raises(ProjectError, match="bigquery sources diff locally"):
        load_project(project("bigquery", "m", "SELECT id FROM t"))
    with pytest.raises(ProjectError, match="incremental model"):
        load_project(project("duckdb", "m", "SELECT id FROM t WHERE ts > {{last_sync_time}}"))
    with pytest.raises(ProjectError, match="at most 40 characters"):
        load_project(project("duckdb", "m" * 41, "SELECT id FROM t"))
    assert load_project(project("duckdb", "m" * 40, "SELECT id FROM t")).models
