"""The Databricks SQL Statement Execution emulator, driven by the real databricks-sdk over
loopback HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import DatabricksError
from databricks.sdk.service.sql import (
    Disposition,
    ExecuteStatementRequestOnWaitTimeout,
    Format,
    StatementState,
)

from retl_assets.emulators.databricks import DatabricksEmulator, build_databricks_app
from retl_assets.emulators.server import EmulatorServer

TOKEN = "dapi-test-token"
WAREHOUSE = "emulated"
ROWS = 200_000


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    path = tmp_path_factory.mktemp("databricks") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, "
                f"range * 0.5 AS score FROM range({ROWS})")
    con.execute("CREATE SCHEMA sales")
    con.execute("CREATE TABLE sales.orders AS SELECT range AS id FROM range(5)")
    con.execute("CREATE TABLE secret AS SELECT 1 AS x")
    con.close()
    return path


@pytest.fixture(scope="module")
def served(database):
    emu = DatabricksEmulator(database, tokens={TOKEN}, chunk_rows=50_000,
                             allowed_tables={"main.default.people", "main.sales.orders"})
    with EmulatorServer(build_databricks_app(emu)).start() as server:
        yield emu, server


@pytest.fixture
def emu(served):
    emulator, _ = served
    emulator.set_faults(rate_429=0, retry_after=1)
    emulator.throttle(0)
    emulator.execution_delay_s = 0
    return emulator


@pytest.fixture
def client(served):
    _, server = served
    return WorkspaceClient(config=Config(host=server.url, token=TOKEN, retry_timeout_seconds=10))


@pytest.fixture
def url(served):
    return served[1].url


def external(client, sql, **kw):
    return client.statement_execution.execute_statement(
        sql, WAREHOUSE, disposition=Disposition.EXTERNAL_LINKS, format=Format.ARROW_STREAM, **kw)


def raw_status(client, statement_id):
    return client.api_client.do("GET", f"/api/2.0/sql/statements/{statement_id}")["status"]


def test_auth_is_refused_in_databricks_error_shape(emu, url):
    body = {"statement": "SELECT 1", "warehouse_id": WAREHOUSE}
    missing = requests.post(f"{url}/api/2.0/sql/statements", json=body, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error_code"] == "UNAUTHENTICATED" and missing.json()["message"]
    wrong = requests.post(f"{url}/api/2.0/sql/statements", json=body, timeout=10,
                          headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert set(wrong.json()) == {"error_code", "message"}
    assert wrong.json()["error_code"] == "PERMISSION_DENIED"
    sdk = WorkspaceClient(config=Config(host=url, token="nope", retry_timeout_seconds=5))
    with pytest.raises(DatabricksError) as refused:
        sdk.statement_execution.execute_statement("SELECT 1", WAREHOUSE)
    assert refused.value.error_code == "PERMISSION_DENIED"


def test_a_large_result_is_fetched_chunk_by_chunk_through_external_links(emu, client):
    response = external(client, "SELECT id, name, score FROM main.default.people ORDER BY id")
    assert response.status.state == StatementState.SUCCEEDED
    manifest = response.manifest
    assert manifest.total_chunk_count == 4 and manifest.total_row_count == ROWS
    assert [(c.chunk_index, c.row_offset, c.row_count) for c in manifest.chunks] == [
        (i, i * 50_000, 50_000) for i in range(4)]
    assert [(c.name, c.type_name.value) for c in manifest.schema.columns] == [
        ("id", "LONG"), ("name", "STRING"), ("score", "DECIMAL")]
    link = response.result.external_links[0]
    expires = datetime.fromisoformat(link.expiration)
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 15 * 60

    # The presigned link takes no token, and a tampered one is refused.
    assert requests.get(link.external_link, timeout=10,
                        headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400
    assert requests.get(link.external_link.replace("sig=", "sig=0"), timeout=10).status_code == 403

    seen, index, ids = [], 0, []
    while link is not None:
        assert link.chunk_index == index
        body = requests.get(link.external_link, timeout=30)
        assert body.status_code == 200
        chunk = pa.ipc.open_stream(pa.BufferReader(body.content)).read_all()
        assert chunk.num_rows == link.row_count and len(body.content) == link.byte_count
        seen.append(chunk.num_rows)
        ids.extend(chunk.column("id").to_pylist()[:1])
        if link.next_chunk_index is None:
            break
        index = link.next_chunk_index
        link = client.statement_execution.get_statement_result_chunk_n(
            response.statement_id, index).external_links[0]
    assert seen == [50_000] * 4
    assert ids == [0, 50_000, 100_000, 150_000]
    assert chunk.column("score").to_pylist()[-1] == pytest.approx((ROWS - 1) * 0.5)


def test_inline_results_are_json_and_limited_to_25_mib(emu, client):
    small = client.statement_execution.execute_statement(
        "SELECT id, name FROM people WHERE id < 3 ORDER BY id", WAREHOUSE)
    assert small.result.data_array == [["0", "p0"], ["1", "p1"], ["2", "p2"]]

    big = "SELECT repeat('x', 1024) AS pad FROM range(30000)"  # ~30 MiB
    failed = client.statement_execution.execute_statement(big, WAREHOUSE)
    assert failed.status.state == StatementState.FAILED
    assert failed.status.error.error_code is not None
    assert "INLINE" in failed.status.error.message
    ok = client.statement_execution.execute_statement(
        big, WAREHOUSE, disposition=Disposition.EXTERNAL_LINKS, format=Format.ARROW_STREAM)
    assert ok.status.state == StatementState.SUCCEEDED and ok.manifest.total_row_count == 30000

    with pytest.raises(DatabricksError) as refused:  # Arrow is for external links only
        client.statement_execution.execute_statement(
            "SELECT 1", WAREHOUSE, disposition=Disposition.INLINE, format=Format.ARROW_STREAM)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"

    limited = external(client, "SELECT * FROM people", row_limit=10)
    assert limited.manifest.total_row_count == 10 and limited.manifest.truncated is True


def test_failed_statements_carry_error_code_and_sql_state(emu, client):
    cases = {"SELECT * FROM main.default.nope": "42P01",
             "SELECT * FROM secret": "42501",  # outside the allow-list: a missing grant
             "SELEC 1": "42601"}
    for sql, state in cases.items():
        failed = external(client, sql)
        assert failed.status.state == StatementState.FAILED, sql
        assert failed.status.error.error_code is not None and failed.status.error.message
        status = raw_status(client, failed.statement_id)
        assert status["state"] == "FAILED" and status["sql_state"] == state, (sql, status)
        assert status["error"]["message"].endswith(f"SQLSTATE: {state}")

    missing_catalog = external(client, "SELECT 1", catalog="nope")
    assert raw_status(client, missing_catalog.statement_id)["sql_state"] == "42704"
    in_schema = external(client, "SELECT count(*) AS n FROM orders", catalog="main",
                         schema="sales")
    assert in_schema.status.state == StatementState.SUCCEEDED

    with pytest.raises(DatabricksError) as unknown:
        client.statement_execution.execute_statement("SELECT 1", "no-such-warehouse")
    assert unknown.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_the_429_knob_answers_with_retry_after_and_the_sdk_waits(emu, client, url):
    emu.set_faults(rate_429=1.0, retry_after=2)
    body = {"statement": "SELECT 1", "warehouse_id": WAREHOUSE}
    throttled = requests.post(f"{url}/api/2.0/sql/statements", json=body, timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"})
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    emu.set_faults(rate_429=0, retry_after=1)

    emu.throttle(1)
    started = time.monotonic()
    answered = client.statement_execution.execute_statement("SELECT 1 AS one", WAREHOUSE)
    assert answered.result.data_array == [["1"]]
    assert time.monotonic() - started >= 1  # it waited as told


def test_statements_can_be_polled_and_canceled(emu, client):
    emu.execution_delay_s = 0.3
    pending = client.statement_execution.execute_statement(
        "SELECT 42 AS answer", WAREHOUSE, wait_timeout="0s")
    assert pending.status.state in (StatementState.PENDING, StatementState.RUNNING)
    assert pending.manifest is None
    for _ in range(100):
        polled = client.statement_execution.get_statement(pending.statement_id)
        if polled.status.state == StatementState.SUCCEEDED:
            break
        time.sleep(0.05)
    assert polled.result.data_array == [["42"]]

    emu.execution_delay_s = 5
    doomed = client.statement_execution.execute_statement("SELECT 1", WAREHOUSE,
                                                          wait_timeout="0s")
    client.statement_execution.cancel_execution(doomed.statement_id)
    assert client.statement_execution.get_statement(
        doomed.statement_id).status.state == StatementState.CANCELED

    emu.execution_delay_s = 6
    gave_up = client.statement_execution.execute_statement(
        "SELECT 1", WAREHOUSE, wait_timeout="5s",
        on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CANCEL)
    assert gave_up.status.state == StatementState.CANCELED


def test_delta_history_version_grows_when_the_table_changes(emu, client, database):
    def version():
        answer = client.statement_execution.execute_statement(
            "DESCRIBE HISTORY main.sales.orders LIMIT 1", WAREHOUSE)
        assert answer.manifest.schema.columns[0].name == "version"
        return int(answer.result.data_array[0][0])

    first = version()
    assert version() == first
    con = duckdb.connect(str(database))
    con.execute("UPDATE sales.orders SET id = id + 100 WHERE id = 1")
    con.close()
    assert version() == first + 1


def test_databricks_sql_is_translated_for_duckdb(emu, client):
    sql = ("WITH top AS (SELECT `id`, name FROM main.default.people WHERE id < 5) "
           "SELECT count(*) AS n, max(name) AS last FROM top WHERE name <> \"p0\"")
    answer = client.statement_execution.execute_statement(sql, WAREHOUSE)
    assert answer.status.state == StatementState.SUCCEEDED, answer.status
    assert answer.result.data_array == [["4", "p4"]]
