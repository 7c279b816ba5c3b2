"""Every warehouse as a user meets it: `retl validate | preview | test-connection | sync` and
`dagster asset materialize` on one project, as far as README says each is tested (a real
engine, or the emulator of its API started here). The runs are separate processes on a real
instance; the three look-only commands run `retl`'s own entry point in this process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from retl_assets import vendors
from retl_assets.automation.changes import change_marker
from retl_assets.emulators import EmulatorServer
from retl_assets.project import load_project
from retl_assets.vendors import source_types
from retl_assets_tests.conftest import WRITE_KEY

TOKEN = "warehouse-secret-token-123"
ROWS = 20

PROJECT = """
sources:
  wh:
    type: {kind}
{source}
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {cio}
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
    mapping: {{userId: id, email: email, score: score}}
"""


@dataclass
class Warehouse:
    source: str  # the source entry's fields, indented
    sql: str  # the model, in the warehouse's dialect
    change: object  # () -> None: update one row


def _duckdb_file(path: Path, schema: str = "main") -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE TABLE {schema}.people AS SELECT i AS id, 'p' || i || '@example.com' "
                    f"AS email, i * 2 AS score FROM range(1, {ROWS + 1}) t(i)")
    finally:
        con.close()


def _duckdb_update(path: Path, schema: str = "main"):
    def change() -> None:
        con = duckdb.connect(str(path))
        try:
            con.execute(f"UPDATE {schema}.people SET score = 999 WHERE id = 3")
        finally:
            con.close()
    return change


def _pg(dsn: str, *statements: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(dsn) as con:
        for s in statements:
            con.cursor().execute(s)
        con.commit()


@contextlib.contextmanager
def warehouse(kind: str, tmp: Path, request, monkeypatch) -> Iterator[Warehouse]:
    monkeypatch.setenv("WH_SECRET", TOKEN)
    if kind == "duckdb":
        _duckdb_file(tmp / "wh.duckdb")
        yield Warehouse("    path: wh.duckdb", "SELECT id, email, score FROM people",
                        _duckdb_update(tmp / "wh.duckdb"))
    elif kind in ("postgres", "redshift"):
        server = request.getfixturevalue("postgres_server")
        _pg(server.dsn, "DROP TABLE IF EXISTS people",
            "CREATE TABLE people AS SELECT g AS id, 'p' || g || '@example.com' AS email, "
            f"g * 2 AS score FROM generate_series(1, {ROWS}) g")
        monkeypatch.setenv("WH_DSN", server.dsn)
        change = lambda: _pg(server.dsn, "UPDATE people SET score = 999 WHERE id = 3")  # noqa: E731
        if kind == "postgres":
            yield Warehouse("    dsn: {env: WH_DSN}", "SELECT id, email, score FROM people",
                            change)
        else:
            from retl_assets_tests.pg_server import DATABASE, USER

            _pg(server.dsn, f"ALTER ROLE {USER} PASSWORD '{TOKEN}'")
            yield Warehouse(f"    host: 127.0.0.1\n    port: {server.port}\n"
                            f"    database: {DATABASE}\n    user: {USER}\n"
                            "    password: {env: WH_SECRET}\n    sslmode: disable",
                            "SELECT id, email, score FROM people", change)
    elif kind == "bigquery":
        from retl_assets.emulators.bigquery import BigQueryEmulator, build_bigquery_app

        _duckdb_file(tmp / "bq.duckdb", "crm")
        emu = BigQueryEmulator(tmp / "bq.duckdb", tokens={TOKEN}, projects={"proj"})
        with EmulatorServer(build_bigquery_app(emu)) as server:
            yield Warehouse(f"    project: proj\n    dataset: crm\n    api_endpoint: {server.url}"
                            "\n    access_token: {env: WH_SECRET}\n    retry_seconds: 5",
                            "SELECT id, email, score FROM `proj.crm.people` "
                            "WHERE TIMESTAMP_SECONDS(0) < CURRENT_TIMESTAMP()",
                            _duckdb_update(tmp / "bq.duckdb", "crm"))
    elif kind == "databricks":
        from retl_assets.emulators.databricks import DatabricksEmulator, build_databricks_app

        _duckdb_file(tmp / "dbx.duckdb")
        emu = DatabricksEmulator(tmp / "dbx.duckdb", tokens={TOKEN})
        with EmulatorServer(build_databricks_app(emu)) as server:
            yield Warehouse(f"    host: {server.url}\n    warehouse_id: emulated\n"
                            "    token: {env: WH_SECRET}\n    catalog: main\n    schema: main\n"
                            "    retry_timeout_s: 5",
                            "SELECT id, email, score FROM main.main.people",
                            _duckdb_update(tmp / "dbx.duckdb"))
    elif kind == "snowflake":
        from retl_assets_tests.sources.snowflake.test_snowflake import snowflake_warehouse

        with snowflake_warehouse(tmp, ROWS) as (fields, sql, change):
            monkeypatch.setenv("SF_WH_PASSWORD", os.environ["SF_WH_PASSWORD"])
            yield Warehouse(fields, sql, change)
    else:
        raise AssertionError(f"no warehouse set-up for {kind!r}: add one here")


def look(capsys, *args: str) -> tuple[int, str]:
    """A look-only `retl` command through its entry point, as the console script runs it."""
    from retl_assets.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    return code, captured.out  # stderr holds the in-process servers' own logs too


def run(tmp: Path, *args: str, dagster: bool = False) -> tuple[int, str]:
    env = {**os.environ, "RETL_PROJECT": str(tmp / "retl.yaml"),
           "DAGSTER_HOME": str(tmp / "dagster_home"), "CIO_WRITE_KEY": WRITE_KEY}
    (tmp / "dagster_home").mkdir(exist_ok=True)
    (tmp / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = ([str(Path(sys.executable).parent / "dagster"), *args] if dagster
               else [sys.executable, "-m", "retl_assets.cli", *args])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", source_types())
def test_a_warehouse_works_through_every_command(kind, tmp_path, request, monkeypatch, emulator,
                                                 capsys):
    with warehouse(kind, tmp_path, request, monkeypatch) as wh:
        (tmp_path / "retl.yaml").write_text(PROJECT.format(
            kind=kind, source=wh.source, cio=emulator.url, sql=json.dumps(wh.sql)))
        monkeypatch.setenv("RETL_PROJECT", str(tmp_path / "retl.yaml"))
        monkeypatch.setenv("CIO_WRITE_KEY", WRITE_KEY)

        code, out = look(capsys, "validate", "--json")
        assert code == 0 and json.loads(out.splitlines()[-1])["ok"], out[-2000:]
        code, out = look(capsys, "preview", "people", "--json")
        assert code == 0, out[-2000:]
        preview = json.loads(out.splitlines()[-1])
        assert len(preview["rows"]) == 10
        assert [c["name"].lower() for c in preview["columns"]] == ["id", "email", "score"]
        code, out = look(capsys, "test-connection", "wh", "--json")
        assert code == 0 and json.loads(out.splitlines()[-1])["ok"], out[-2000:]
        assert TOKEN not in out

        code, out = run(tmp_path, "sync", "people", "--json")
        assert code == 0, out[-3000:]
        first = json.loads(out.splitlines()[-1])
        assert (first["added"], first["syncs"]["people_identify"]["succeeded"]) == (ROWS, ROWS)
        assert emulator.state()["profiles"]["3"]["score"] == 6

        # The `source_changed` sensor's question, where the warehouse can answer it itself
        # (fakesnow has no SYSTEM$LAST_CHANGE_COMMIT_TIME; the others need a fingerprint query).
        native = vendors.source(kind).change_marker and kind != "snowflake"
        if native:
            project = load_project(tmp_path / "retl.yaml")
            before = change_marker(project, project.models["people"])
            assert change_marker(project, project.models["people"]) == before
        wh.change()
        if native:
            assert change_marker(project, project.models["people"]) != before
        partition = ["--partition", first["partition"]] if first["partition"] else []
        code, out = run(tmp_path, "asset", "materialize", "-m", "retl_assets.definitions",
                        "--select", "models/people,diffs/people,syncs/people_identify",
                        *partition, dagster=True)
        assert code == 0, out[-3000:]
        assert emulator.state()["profiles"]["3"]["score"] == 999
        assert TOKEN not in out
