"""A model never changes its warehouse: refused at load by sqlglot's parser for the source's
dialect, refused again before every run, and run in a read-only session where there is one."""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as pg
import pytest

from retl_assets.errors import ModelError, ProjectError
from retl_assets.project import load_project
from retl_assets.project.load import Model
from retl_assets.project.query import QueryRefused, parse_read_only, tables_read
from retl_assets.vendors import source_types
from retl_assets_tests.sources.test_duckdb_postgres import pg_project

# Each kind of statement that writes, per dialect as its users would spell it.
REFUSED = {
    "DML": {"*": "DELETE FROM contacts WHERE id = 1",
            "snowflake": "MERGE INTO contacts c USING s ON c.id = s.id WHEN MATCHED THEN DELETE"},
    "DML returning": {"*": "UPDATE contacts SET email = NULL RETURNING *",
                      "bigquery": "UPDATE ds.contacts SET email = NULL WHERE TRUE",
                      "snowflake": "UPDATE contacts SET email = NULL",
                      "databricks": "UPDATE contacts SET email = NULL",
                      "redshift": "UPDATE contacts SET email = NULL"},
    "insert": {"*": "INSERT INTO contacts SELECT * FROM contacts"},
    "DDL": {"*": "CREATE TABLE copy AS SELECT * FROM contacts"},
    "drop": {"*": "DROP TABLE contacts"},
    "truncate": {"*": "TRUNCATE TABLE contacts"},
    "several statements": {"*": "SELECT 1; DELETE FROM contacts"},
    "COPY": {"*": "COPY contacts TO '/tmp/out.csv'",
             "snowflake": "COPY INTO @stage FROM contacts",
             "bigquery": "EXPORT DATA OPTIONS (uri = 'gs://b/*.csv') AS SELECT * FROM ds.t",
             "redshift": "UNLOAD ('SELECT * FROM contacts') TO 's3://b/x'",
             "databricks": "COPY INTO contacts FROM 's3://b/x' FILEFORMAT = CSV"},
    "CALL": {"*": "CALL cleanup()"},
    "data-modifying CTE": {"*": "WITH d AS (DELETE FROM contacts RETURNING *) SELECT * FROM d"},
    "SELECT INTO": {"*": "SELECT * INTO backup FROM contacts",
                    "bigquery": None, "snowflake": None, "databricks": None},
    "grant": {"*": "GRANT SELECT ON contacts TO someone"},
}


def _cases():
    # Each warehouse type is named as sqlglot names its dialect (pinned in test_layout).
    for kind, spellings in REFUSED.items():
        for dialect in source_types():
            sql = spellings.get(dialect, spellings["*"])
            if sql is not None:
                yield pytest.param(dialect, sql, id=f"{dialect}-{kind}")


@pytest.mark.parametrize(("dialect", "sql"), list(_cases()))
def test_every_kind_of_write_is_refused_in_every_dialect(dialect, sql):
    with pytest.raises(QueryRefused):
        parse_read_only(sql, dialect)


ACCEPTED = {  # the SQL our seed users write, per warehouse
    "snowflake": 'SELECT "userId", email FROM analytics.public.users '
                 "WHERE updated_at > TO_TIMESTAMP(1767225600) "
                 "OR created_at > CURRENT_TIMESTAMP - INTERVAL '24 hours'",
    "bigquery": "SELECT user_id, email FROM `proj.analytics.users` "
                "WHERE updated_at > TIMESTAMP_SECONDS(1767225600)",
    "postgres": "WITH recent AS (SELECT * FROM people WHERE seen_at > now() - interval '1 day') "
                "SELECT * FROM recent UNION ALL SELECT * FROM archive.people",
    "redshift": "SELECT id, email FROM crm.people WHERE updated_at > GETDATE() - INTERVAL '1 day'",
    "databricks": "SELECT id, email FROM main.crm.people QUALIFY row_number() "
                  "OVER (PARTITION BY email ORDER BY id) = 1",
    "duckdb": "SELECT * FROM contacts JOIN main.companies USING (company_id)",
}


@pytest.mark.parametrize("kind", source_types())
def test_the_seed_queries_pass_and_name_the_tables_they_read(kind):
    dialect = kind
    assert parse_read_only(ACCEPTED[kind], dialect) is not None
    expected = {
        "snowflake": ["analytics.public.users"], "bigquery": ["`proj`.`analytics`.`users`"],
        "postgres": ["archive.people", "people"], "redshift": ["crm.people"],
        "databricks": ["main.crm.people"], "duckdb": ["contacts", "main.companies"],
    }[kind]
    assert tables_read(ACCEPTED[kind], dialect) == expected


def test_the_loader_refuses_a_writing_model_naming_it(workspace):
    workspace.write(workspace.project.path.read_text().replace(
        'SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts',
        "WITH gone AS (DELETE FROM contacts RETURNING *) SELECT id AS \"userId\" FROM gone"))
    with pytest.raises(ProjectError, match=r"models\.contacts\.sql: its SQL contains DELETE"):
        load_project(workspace.root / "retl.yaml")


def test_the_query_is_checked_again_before_it_runs():
    # The loader proved the file's SQL; a model built any other way is still checked.
    model = Model("sneaky", load_project().models["contacts"].config, "DROP TABLE contacts")
    with pytest.raises(ModelError, match=r"model 'sneaky': its SQL contains DROP"):
        model.render_sql(0)


@pytest.mark.parametrize("sql", [
    "DELETE FROM people WHERE id <= 3 RETURNING id, email",
    "WITH d AS (DELETE FROM people WHERE id <= 3 RETURNING *) SELECT id, email FROM d",
])
def test_a_writing_postgres_model_neither_syncs_nor_deletes(workspace, postgres_server,
                                                          monkeypatch, sql):
    # The case a new user hit: `retl validate` refused it, `retl sync` synced "successfully".
    pg_project(workspace, postgres_server, monkeypatch, sql)
    with pytest.raises(ProjectError, match="models.people.sql: its SQL contains DELETE"):
        workspace.sync("people")
    with pg.connect(postgres_server.dsn) as con:
        cur = con.cursor()
        cur.execute("SELECT count(*) FROM people")
        assert cur.fetchone()[0] == 20


def test_a_hidden_write_fails_in_the_read_only_postgres_session(workspace, postgres_server,
                                                               monkeypatch):
    # nextval() looks like any function to a parser; the session refuses it.
    pg_project(workspace, postgres_server, monkeypatch,
               "SELECT id, email, nextval('people_seq') AS n FROM people")
    run = workspace.sync("people")
    assert run.status == "failure"
    assert any("people" in e and "read-only transaction" in e for e in run.errors), run.errors
    with pg.connect(postgres_server.dsn) as con:
        cur = con.cursor()
        cur.execute("SELECT is_called FROM people_seq")
        assert cur.fetchone()[0] is False
    assert workspace.store.head("people").snapshot is None


def test_a_hidden_write_fails_in_the_read_only_duckdb_file(workspace):
    workspace.sql("CREATE SEQUENCE contact_seq")
    workspace.write(workspace.project.path.read_text().replace(
        "first_name, plan, updated_at FROM contacts",
        "first_name, plan, updated_at, nextval('contact_seq') AS n FROM contacts"))
    run = workspace.sync("contacts")
    assert run.status == "failure"
    assert any("contacts" in e and "read-only" in e for e in run.errors), run.errors
    assert workspace.sql("SELECT nextval('contact_seq')") == [(1,)]


def test_a_model_over_its_row_limit_stops_and_says_how_to_raise_it(workspace):
    text = workspace.project.path.read_text()
    workspace.write(text.replace("    schedule: {every: 15m}\n",
                                 "    schedule: {every: 15m}\n    max_rows: 299\n"))
    run = workspace.sync("contacts")
    assert run.status == "failure"
    assert any("more than 299 rows" in e and "max_rows" in e for e in run.errors), run.errors
    assert workspace.store.head("contacts").snapshot is None
    workspace.write(text.replace("    schedule: {every: 15m}\n",
                                 "    schedule: {every: 15m}\n    max_rows: 300\n"))
    assert workspace.sync("contacts").status == "success"


def test_a_model_over_its_column_limit_stops_and_says_how_to_raise_it(workspace):
    workspace.write(workspace.project.path.read_text().replace(
        "    schedule: {every: 15m}\n", "    schedule: {every: 15m}\n    max_columns: 4\n"))
    run = workspace.sync("contacts")
    assert run.status == "failure"
    assert any("5 columns, more than the limit of 4" in e and "max_columns" in e
               for e in run.errors), run.errors
