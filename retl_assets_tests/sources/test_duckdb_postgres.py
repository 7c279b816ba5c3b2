"""The two local warehouses through the source interface: bounded streams, previews, and
`retl test-connection` answers that say plainly what is wrong."""

from __future__ import annotations

import json
import socket

import adbc_driver_postgresql.dbapi as pg
import duckdb
import pytest

from retl_assets.sources import open_source, preview
from retl_assets.sources.base import BATCH_ROWS
from retl_assets.vendors import source_types
from retl_assets_tests.pg_server import USER
from retl_assets_tests.test_cli import run_retl

PG_PROJECT = """
sources:
  wh:
    type: postgres
    dsn: {{env: WAREHOUSE_DSN}}
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {url}
models:
  people:
    source: wh
    primary_key: id
    sql: {sql}
syncs:
  people_identify:
    model: people
    destination: cio
    action: identify
    mapping: {{userId: id, email: email}}
"""


def run_sql(dsn: str, *statements: str) -> None:
    with pg.connect(dsn) as con:
        cur = con.cursor()
        for s in statements:
            cur.execute(s)
        con.commit()


def pg_project(workspace, server, monkeypatch, sql: str, url: str = "http://127.0.0.1:9"):
    """A project whose model `people` reads 20 rows of a fresh PostgreSQL table."""
    monkeypatch.setenv("WAREHOUSE_DSN", server.dsn)
    run_sql(server.dsn, "DROP TABLE IF EXISTS people", "DROP SEQUENCE IF EXISTS people_seq",
            "CREATE SEQUENCE people_seq",
            "CREATE TABLE people (id int PRIMARY KEY, email text)",
            "INSERT INTO people SELECT g, 'p' || g || '@example.com' FROM generate_series(1, 20) g")
    workspace.write(PG_PROJECT.format(url=url, sql=json.dumps(sql)))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgres_streams_bounded_batches_and_previews_ten_rows(workspace, postgres_server,
                                                                monkeypatch):
    pg_project(workspace, postgres_server, monkeypatch, "SELECT id, email FROM people")
    run_sql(postgres_server.dsn,
            "INSERT INTO people SELECT g, NULL FROM generate_series(21, 150000) g")
    source = open_source(workspace.project, "wh")
    with source.stream("SELECT id, email FROM people") as reader:
        sizes = [b.num_rows for b in reader]
    assert sum(sizes) == 150_000 and len(sizes) > 1 and max(sizes) <= BATCH_ROWS
    table = preview(source, "SELECT id, email FROM people ORDER BY id")
    assert table.num_rows == 10 and table.column("id").to_pylist() == list(range(1, 11))
    assert str(table.schema.field("id").type) == "int32"


def test_postgres_test_connection_says_what_is_wrong(workspace, postgres_server, monkeypatch):
    pg_project(workspace, postgres_server, monkeypatch,
               "SELECT p.id, p.email FROM people p JOIN secret_scores s ON s.id = p.id")
    dsn = postgres_server.dsn
    run_sql(dsn, "DROP TABLE IF EXISTS secret_scores", "CREATE TABLE secret_scores (id int)",
            "DROP ROLE IF EXISTS reader", "CREATE ROLE reader LOGIN",
            "GRANT SELECT ON people TO reader")
    code, out, _ = run_retl(workspace, "test-connection", "wh", "--json",
                            env={"WAREHOUSE_DSN": dsn})
    assert code == 0 and json.loads(out)["ok"], out
    assert "2 tables readable" in json.loads(out)["message"]

    as_reader = dsn.replace(f"{USER}@", "reader@")
    code, out, _ = run_retl(workspace, "test-connection", "wh", env={"WAREHOUSE_DSN": as_reader})
    assert code == 1 and "table secret_scores: the role lacks a grant to read" in out, out

    no_db = dsn.rsplit("/", 1)[0] + "/nowhere"
    code, out, _ = run_retl(workspace, "test-connection", "wh", env={"WAREHOUSE_DSN": no_db})
    assert code == 1 and 'database "nowhere" does not exist' in out, out

    down = dsn.replace(f":{postgres_server.port}/", f":{closed_port()}/")
    code, out, _ = run_retl(workspace, "test-connection", "wh", env={"WAREHOUSE_DSN": down})
    assert code == 1 and "wh: cannot reach the server" in out, out

    run_sql(dsn, "DROP TABLE secret_scores")
    code, out, _ = run_retl(workspace, "test-connection", "wh", env={"WAREHOUSE_DSN": dsn})
    assert code == 1 and "table secret_scores: no such table" in out, out


def test_duckdb_test_connection_names_a_missing_table(workspace):
    code, out, _ = run_retl(workspace, "test-connection", "warehouse", "--json")
    assert code == 0 and json.loads(out)["ok"], out
    workspace.sql("ALTER TABLE contacts RENAME TO people")
    code, out, _ = run_retl(workspace, "test-connection", "warehouse")
    assert code == 1 and "warehouse: table contacts: no such table" in out, out
    workspace.warehouse.unlink()
    code, out, _ = run_retl(workspace, "test-connection", "warehouse")
    assert code == 1 and "does not exist" in out, out


def test_duckdb_streams_bounded_batches(workspace):
    workspace.sql("CREATE TABLE big AS SELECT range AS id FROM range(150000)")
    with open_source(workspace.project, "warehouse").stream("SELECT id FROM big") as reader:
        sizes = [b.num_rows for b in reader]
    assert sum(sizes) == 150_000 and max(sizes) <= BATCH_ROWS


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_the_source_repr_never_holds_its_secret(kind, monkeypatch, tmp_path):
    from retl_assets.vendors import source

    facts = source(kind)
    if kind == "duckdb":
        duckdb.connect(str(tmp_path / "w.duckdb")).close()
        config = facts.config.model_validate({"type": "duckdb", "path": "w.duckdb"})
    else:
        monkeypatch.setenv("PGPW", "hunter2-secret")
        config = facts.config.model_validate(
            {"type": "postgres", "database": "d", "user": "u", "password": {"env": "PGPW"}})
    made = facts.connect("wh", config, tmp_path)
    assert "hunter2" not in repr(made) and "hunter2" not in str(vars(made).get("name"))


def test_postgres_grants_let_the_role_read_exactly_the_models_tables(workspace, postgres_server,
                                                                      monkeypatch):
    pg_project(workspace, postgres_server, monkeypatch,
               "WITH p AS (SELECT * FROM people) SELECT p.id, p.email, s.score FROM p "
               "JOIN crm.scores s ON s.id = p.id")
    dsn = postgres_server.dsn
    run_sql(dsn, "DROP SCHEMA IF EXISTS crm CASCADE", "DROP OWNED BY retl_reader",
            "DROP ROLE IF EXISTS retl_reader") if _role_exists(dsn) else None
    run_sql(dsn, "DROP SCHEMA IF EXISTS crm CASCADE", "CREATE SCHEMA crm",
            "CREATE TABLE crm.scores AS SELECT g AS id, g * 2 AS score "
            "FROM generate_series(1, 20) g",
            "CREATE TABLE crm.salaries AS SELECT 1 AS id, 100000 AS salary")
    code, out, err = run_retl(workspace, "grants", "wh")
    assert code == 0, err
    assert "GRANT SELECT ON crm.scores TO retl_reader;" in out
    assert "GRANT SELECT ON public.people TO retl_reader;" in out
    assert "salaries" not in out
    statements = [line for line in out.replace("<choose a password>", "pw").splitlines()
                  if line and not line.startswith("--")]
    run_sql(dsn, *statements)

    reader = dsn.replace(f"{USER}@", "retl_reader@")
    with pg.connect(reader) as con:
        cur = con.cursor()
        cur.execute("SELECT count(*) FROM people JOIN crm.scores USING (id)")
        assert cur.fetchone()[0] == 20
    for forbidden in ("SELECT * FROM crm.salaries", "CREATE TABLE crm.x (a int)"):
        with pg.connect(reader) as con, \
                pytest.raises(Exception, match="permission denied|read-only"):
            con.cursor().execute(forbidden)
    monkeypatch.setenv("WAREHOUSE_DSN", reader)
    code, out, _ = run_retl(workspace, "test-connection", "wh", env={"WAREHOUSE_DSN": reader})
    assert code == 0 and "2 tables readable" in out, out


def _role_exists(dsn: str) -> bool:
    with pg.connect(dsn) as con:
        cur = con.cursor()
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'retl_reader'")
        return cur.fetchone()[0] > 0


@pytest.mark.parametrize("kind", [k for k in source_types() if k != "postgres"])
def test_grants_for_each_warehouse_parse_and_name_only_the_models_tables(kind, tmp_path):
    # Rendered from the models' SQL for each dialect; what a real account does with them is
    # the vendor's: these must at least be valid SQL of that dialect naming the right tables.
    import sqlglot

    from retl_assets.grants import grants
    from retl_assets.project import load_project

    sql = {"snowflake": 'SELECT "userId" FROM analytics.crm.users JOIN events e USING ("userId")',
           "bigquery": "SELECT * FROM `p1.crm.users` JOIN events USING (id)",
           "databricks": "SELECT * FROM main.crm.users JOIN events USING (id)",
           "redshift": "SELECT * FROM crm.users JOIN events USING (id)",
           "duckdb": "SELECT * FROM crm.users JOIN events USING (id)"}[kind]
    config = {"snowflake": "account: a\n    user: u\n    password: p\n    database: analytics\n"
                           "    schema: public\n    warehouse: wh",
              "bigquery": "project: p1\n    dataset: web",
              "databricks": "server_hostname: h\n    warehouse_id: w\n    token: t\n"
                            "    catalog: main\n    schema: web",
              "redshift": "host: h\n    database: dev\n    user: u\n    password: p",
              "duckdb": "path: w.duckdb"}[kind]
    (tmp_path / "retl.yaml").write_text(
        f"sources:\n  wh:\n    type: {kind}\n    {config}\nmodels:\n  m:\n    source: wh\n"
        f"    primary_key: id\n    sql: '{sql.replace(chr(39), chr(39) * 2)}'\n")
    out = grants(load_project(tmp_path / "retl.yaml"), "wh")
    body = [line for line in out.splitlines() if line and not line.startswith("--")]
    expected = {"snowflake": ["analytics.crm.users", "analytics.public.events"],
                "bigquery": ["p1.crm.users", "p1.web.events"],
                "databricks": ["main.crm.users", "main.web.events"],
                "redshift": ["crm.users", "public.events"], "duckdb": []}[kind]
    granted = [line for line in body if " SELECT " in line or "dataViewer" in line]
    assert len(granted) == len(expected)
    for table, line in zip(expected, granted):
        assert f" {table} " in line, (table, line)
    for statement in body:
        if not statement.startswith("USE ROLE"):
            sqlglot.parse_one(statement.split("--")[0], read=kind)
    if kind == "redshift":  # a password user; an IAM one gets none
        assert body[0].startswith("CREATE USER retl_reader PASSWORD '<choose")
        (tmp_path / "retl.yaml").write_text((tmp_path / "retl.yaml").read_text().replace(
            "user: u\n    password: p", "cluster_identifier: c1\n    db_user: retl_reader"))
        out = grants(load_project(tmp_path / "retl.yaml"), "wh")
        assert "CREATE USER retl_reader PASSWORD DISABLE;" in out


def test_postgres_grants_for_an_in_warehouse_model_let_it_write_only_its_state(
        workspace, postgres_server, monkeypatch, emulator):
    dsn = postgres_server.dsn
    if _role_exists(dsn):
        run_sql(dsn, "DROP SCHEMA IF EXISTS retl_state CASCADE", "DROP OWNED BY retl_reader",
                "DROP ROLE retl_reader")
    pg_project(workspace, postgres_server, monkeypatch, "SELECT id, email FROM people",
               url=emulator.url)
    workspace.write((workspace.root / "retl.yaml").read_text().replace(
        "    primary_key: id\n", "    primary_key: id\n    diff: in_warehouse\n"))
    code, out, err = run_retl(workspace, "grants", "wh")
    assert code == 0, err
    assert "CREATE SCHEMA IF NOT EXISTS retl_state AUTHORIZATION retl_reader;" in out
    run_sql(dsn, *[line for line in out.replace("<choose a password>", "pw").splitlines()
                   if line and not line.startswith("--")])
    reader = dsn.replace(f"{USER}@", "retl_reader@")
    monkeypatch.setenv("WAREHOUSE_DSN", reader)
    run = workspace.sync("people")
    assert run.status == "success" and run.added == 20, run.errors
    run_sql(dsn, "UPDATE people SET email = 'new@example.com' WHERE id = 5")
    run = workspace.sync("people")
    assert (run.status, run.updated) == ("success", 1), run.errors
    with pg.connect(reader) as con, pytest.raises(Exception, match="read-only|permission"):
        con.cursor().execute("UPDATE people SET email = NULL")
