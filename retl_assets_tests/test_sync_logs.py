"""Sync logs: each run's record outcomes land in a table of the model's own warehouse
(DuckDB beside the warehouse file, a real PostgreSQL server, Snowflake through fakesnow),
and rows older than `retention_days` go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import adbc_driver_postgresql.dbapi as pg
import duckdb
import pytest

from retl_assets.errors import ProjectError
from retl_assets.project import load_project
from retl_assets.sources import open_source
from retl_assets.sync.logs import FLUSH_ROWS, SyncLog, load, log_folder, observers
from retl_assets_tests.conftest import PROJECT
from retl_assets_tests.test_postgres_e2e import PROJECT as PG_PROJECT
from retl_assets_tests.test_postgres_e2e import run_sql

LOGS = "    sync_logs: {retention_days: 30}\n"



def with_logs(text: str, source_line: str) -> str:
    """The project text with `sync_logs` on its one source."""
    return text.replace(source_line, source_line + LOGS, 1)


def duckdb_logs(ws) -> list[tuple]:
    path = ws.root / "warehouse.retl_state.duckdb"
    con = duckdb.connect()
    try:  # as a team reads it: attached read-only beside its own data
        con.execute(f"ATTACH '{path}' AS retl_logs (READ_ONLY)")
        return con.execute('SELECT "sync", "model", record_key, "operation", status, error, '
                           'run_id FROM retl_logs.retl_state.retl_sync_log').fetchall()
    finally:
        con.close()


def outcomes(keys: list[str]) -> list[tuple[str, str, str, str | None]]:
    """Delivered, except every tenth key (rejected) and every 25th (invalid)."""
    out = []
    for i, key in enumerate(keys):
        if i % 25 == 0:
            out.append((key, "identify", "invalid", "userId is NULL"))
        elif i % 10 == 0:
            out.append((key, "identify", "rejected", "400: message refused"))
        else:
            out.append((key, "identify", "delivered", None))
    return out


def test_duckdb_log_holds_one_row_per_record_and_drops_old_ones(workspace):
    workspace.write(with_logs(PROJECT.format(url="http://127.0.0.1:9"),
                              "    path: warehouse.duckdb\n"))
    project = workspace.project
    keys = [r[0] for r in workspace.sql("SELECT id FROM contacts ORDER BY id")]
    log = SyncLog("contacts_identify", "contacts", "run-1", log_folder(project))
    answered = outcomes(keys)
    for start in range(0, len(keys), 7):  # as run_sync hands them over: a few at a time
        log.observe(answered[start:start + 7])
    meta = load(project, log)
    assert meta == {"sync_log": "retl_state.retl_sync_log: 300 records"}
    assert not log.path.exists()  # loaded, then removed
    rows = duckdb_logs(workspace)
    assert len(rows) == 300 and {r[2] for r in rows} == set(keys)
    by_status = {s: sum(1 for r in rows if r[4] == s) for s in ("delivered", "rejected", "invalid")}
    assert by_status == {"delivered": 264, "rejected": 24, "invalid": 12}
    assert {(r[0], r[1], r[3], r[6]) for r in rows} == {
        ("contacts_identify", "contacts", "identify", "run-1")}
    assert {r[5] for r in rows if r[4] == "rejected"} == {"400: message refused"}

    # An outcome logged 31 days ago goes with the next run's load; a newer one stays.
    con = duckdb.connect(str(workspace.root / "warehouse.retl_state.duckdb"))
    con.execute("UPDATE retl_state.retl_sync_log SET logged_at = now() - INTERVAL 31 DAY "
                "WHERE record_key = ?", [keys[0]])
    con.execute("UPDATE retl_state.retl_sync_log SET logged_at = now() - INTERVAL 29 DAY "
                "WHERE record_key = ?", [keys[1]])
    con.close()
    second = SyncLog("contacts_identify", "contacts", "run-2", log_folder(project))
    second.observe([(keys[0], "identify", "delivered", None)])
    assert load(project, second) == {"sync_log": "retl_state.retl_sync_log: 1 records"}
    rows = duckdb_logs(workspace)
    assert len(rows) == 300  # 300 - the old one + the new one
    assert [r[6] for r in rows if r[2] == keys[0]] == ["run-2"]
    assert [r[6] for r in rows if r[2] == keys[1]] == ["run-1"]
    # The warehouse itself was never written.
    assert "retl_state" not in {r[0] for r in workspace.sql(
        "SELECT schema_name FROM information_schema.schemata")}


def test_outcomes_stream_to_parquet_in_bounded_chunks(tmp_path):
    import pyarrow.parquet as pq

    log = SyncLog("s", "m", "r", tmp_path)
    for i in range(FLUSH_ROWS * 2 + 5):
        log.observe([(str(i), "upsert", "delivered", None)])
        assert len(log._pending) < FLUSH_ROWS  # never more than one chunk in memory
    path = log.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == FLUSH_ROWS * 2 + 5 and meta.num_row_groups == 3


def test_postgres_log_holds_one_row_per_record_and_drops_old_ones(workspace, postgres_server,
                                                                  monkeypatch):
    dsn = postgres_server.dsn
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    run_sql(dsn, "DROP SCHEMA IF EXISTS retl_state CASCADE")
    workspace.write(with_logs(PG_PROJECT.format(url="http://127.0.0.1:9"),
                              "    dsn: {env: WAREHOUSE_DSN}\n"))
    project = workspace.project
    keys = [f'{{"tenant":1,"id":{i}}}' for i in range(200)]
    log = SyncLog("people_identify", "people", "run-1", log_folder(project))
    log.observe(outcomes(keys))
    assert load(project, log) == {"sync_log": "retl_state.retl_sync_log: 200 records"}
    run_sql(dsn, "UPDATE retl_state.retl_sync_log SET logged_at = now() - interval '31 days' "
                 f"WHERE record_key = '{keys[1]}'")
    again = SyncLog("people_identify", "people", "run-2", log_folder(project))
    again.observe([(keys[2], "identify", "unsent", "503 after 6 retries")])
    assert load(project, again)["sync_log"].endswith(": 1 records")
    with pg.connect(dsn) as con:
        cur = con.cursor()
        cur.execute("SELECT status, count(*), min(run_id), max(run_id) FROM "
                    "retl_state.retl_sync_log GROUP BY status ORDER BY status")
        counts = cur.fetchall()
        cur.execute("SELECT count(*) FROM retl_state.retl_sync_log WHERE record_key = %s"
                    .replace("%s", f"'{keys[1]}'"))
        old = cur.fetchone()[0]
    assert counts == [("delivered", 175, "run-1", "run-1"), ("invalid", 8, "run-1", "run-1"),
                      ("rejected", 16, "run-1", "run-1"), ("unsent", 1, "run-2", "run-2")]
    assert old == 0


def test_snowflake_log_is_put_and_copied_into_the_state_schema(tmp_path):
    import fakesnow
    import snowflake.connector

    from retl_assets.sources.snowflake import FACTS
    from retl_assets.sources.snowflake.config import SnowflakeConfig

    with fakesnow.patch():
        config = SnowflakeConfig.model_validate({
            "type": "snowflake", "account": "retltest", "user": "retl", "password": "pw",
            "database": "PDB", "schema": "PUBLIC", "login_timeout": 5, "network_timeout": 10})
        source = FACTS.connect("wh", config, tmp_path)
        log = SyncLog("s", "m", "run-1", tmp_path)
        log.observe(outcomes([str(i) for i in range(50)]))
        path = log.close()
        cutoff = datetime.now(UTC) - timedelta(days=30)
        assert source.append_sync_log("retl_state", "retl_sync_log", path, cutoff) == 50
        cur = snowflake.connector.connect(database="PDB", schema="PUBLIC").cursor()
        cur.execute('SELECT "status", count(*) FROM "PDB"."retl_state"."retl_sync_log" '
                    'GROUP BY 1 ORDER BY 1')
        assert cur.fetchall() == [("delivered", 44), ("invalid", 2), ("rejected", 4)]


def test_a_log_that_cannot_be_written_warns_and_keeps_the_outcomes(workspace):
    workspace.write(with_logs(PROJECT.format(url="http://127.0.0.1:9"),
                              "    path: warehouse.duckdb\n"))
    project = workspace.project
    (workspace.root / "warehouse.retl_state.duckdb").mkdir()  # in the log file's way
    log = SyncLog("contacts_identify", "contacts", "run-1", log_folder(project))
    log.observe([("u1", "identify", "delivered", None)])
    meta = load(project, log, source=open_source(project, "warehouse"))
    message = meta["sync_log_failed"]
    assert "sync 'contacts_identify'" in message and "retl_state.retl_sync_log" in message
    assert "source 'warehouse'" in message and str(log.path) in message
    assert log.path.exists()  # nothing lost: the outcomes wait in the file


def test_a_source_without_a_write_path_refuses_sync_logs(tmp_path):
    (tmp_path / "retl.yaml").write_text(
        "sources:\n  bq:\n    type: bigquery\n    project: p\n" + LOGS +
        "models:\n  m:\n    source: bq\n    primary_key: id\n    sql: SELECT 1 AS id\n")
    with pytest.raises(ProjectError) as e:
        load_project(tmp_path / "retl.yaml")
    assert "sources.bq.sync_logs" in str(e.value) and "bigquery" in str(e.value)
    assert "remove `sync_logs`" in str(e.value)


def test_run_syncs_hooks_fill_the_log_with_what_the_emulator_answered(workspace, emulator):
    """`observers` as the sync asset uses them, around a real `run_sync` in a real op."""
    from dagster import job, op

    from retl_assets.destinations import open_destination
    from retl_assets.state.store import StateStore
    from retl_assets.sync import run_sync

    workspace.write(with_logs(PROJECT.format(url=emulator.url), "    path: warehouse.duckdb\n"))
    project = workspace.project
    first = workspace.sync(assets=["models/contacts", "diffs/contacts"])
    assert first.status == "success", first.errors
    refused = workspace.sql("SELECT email FROM contacts ORDER BY id LIMIT 2")
    emulator.set_faults(poison={"path": "traits.email", "value": refused[1][0]})
    seen = {}

    @op
    def sync_step(context):
        progress, observe, finish = observers(context, project, "contacts_identify",
                                              context.run_id)
        try:
            seen["result"] = run_sync(project, StateStore(project.state_dir),
                                      "contacts_identify", open_destination(project, "cio"),
                                      progress=progress, observe=observe)
        finally:
            seen["meta"] = finish()

    @job
    def run():
        sync_step()

    result = run.execute_in_process(instance=workspace.instance)
    assert result.success
    assert seen["result"].rejected == 1 and seen["result"].succeeded == 299
    assert seen["meta"] == {"sync_log": "retl_state.retl_sync_log: 300 records"}
    rows = duckdb_logs(workspace)
    assert len(rows) == 300 and {r[6] for r in rows} == {result.run_id}
    rejected = [r for r in rows if r[4] == "rejected"]
    assert len(rejected) == 1 and rejected[0][5]  # with the destination's reason
    assert sum(1 for r in rows if r[4] == "delivered") == 299
    said = [r.user_message for r in workspace.instance.all_logs(result.run_id)
            if r.dagster_event is None and "records answered" in r.user_message]
    assert said and said[-1].startswith("sync contacts_identify: 300/300 records answered")


# ------------------------------------------------ through a real Dagster run (once wired)


def test_a_run_logs_every_record_with_its_status(workspace, emulator):
    workspace.write(with_logs(PROJECT.format(url=emulator.url), "    path: warehouse.duckdb\n"))
    refused = [r[0] for r in workspace.sql("SELECT email FROM contacts ORDER BY id LIMIT 1")]
    emulator.set_faults(poison={"path": "traits.email", "value": refused[0]})
    run = workspace.sync()
    assert run.syncs["contacts_identify"]["rejected"] == 1
    rows = duckdb_logs(workspace)
    assert len(rows) == 300 and {r[0] for r in rows} == {"contacts_identify"}
    assert sorted(r[4] for r in rows).count("rejected") == 1
    assert {r[6] for r in rows} == {run.run_id}


def test_a_postgres_run_logs_every_record(workspace, emulator, postgres_server, monkeypatch):
    dsn = postgres_server.dsn
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    run_sql(dsn, "DROP SCHEMA IF EXISTS retl_state CASCADE", "DROP TABLE IF EXISTS people",
            "CREATE TABLE people (tenant int, id int, email text, score numeric(8,2), "
            "seen_at timestamptz)",
            "INSERT INTO people SELECT 1, g, 'p' || g || '@example.com', g, now() "
            "FROM generate_series(1, 120) g")
    workspace.write(with_logs(PG_PROJECT.format(url=emulator.url),
                              "    dsn: {env: WAREHOUSE_DSN}\n"))
    emulator.set_faults(poison={"path": "traits.email", "value": "p7@example.com"})
    run = workspace.sync("people")
    assert run.syncs["people_identify"]["rejected"] == 1
    with pg.connect(dsn) as con:
        cur = con.cursor()
        cur.execute("SELECT status, count(*) FROM retl_state.retl_sync_log GROUP BY 1 "
                    "ORDER BY 1")
        assert cur.fetchall() == [("delivered", 119), ("rejected", 1)]
