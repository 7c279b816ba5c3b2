"""The Databricks source against the emulator of its SQL Statement Execution API, through the
real databricks-sdk over loopback HTTP."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from retl_assets.emulators.databricks import DatabricksEmulator, build_databricks_app
from retl_assets.emulators.server import EmulatorServer
from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, preview
from retl_assets.sources.databricks import FACTS
from retl_assets.sources.databricks.config import DatabricksConfig
from retl_assets.sources.databricks.source import DatabricksSource

TOKEN = "dapi-secret-0123456789abcdef"
ROWS = 150_000


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    path = tmp_path_factory.mktemp("dbx-source") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""CREATE TABLE events AS SELECT range AS id, 'user-' || range AS name,
        (range % 1000 * 0.25)::DECIMAL(10, 2) AS amount, range % 2 = 0 AS even,
        (range % 7)::INTEGER AS weekday, range / 3.0 AS ratio,
        TIMESTAMPTZ '2026-01-01 00:00:00+00' + range * INTERVAL 1 SECOND AS seen_at,
        DATE '2026-01-01' + (range % 30)::INTEGER AS day FROM range({ROWS})""")
    con.execute("CREATE TABLE payroll AS SELECT 1 AS salary")
    con.close()
    return path


@pytest.fixture(scope="module")
def server(database):
    emu = DatabricksEmulator(database, tokens={TOKEN}, chunk_rows=40_000,
                             allowed_tables={"main.main.events"})
    with EmulatorServer(build_databricks_app(emu)).start() as served:
        served.emulator = emu  # type: ignore[attr-defined]
        yield served


def source(server, **kw) -> DatabricksSource:
    options = {"host": server.url, "warehouse_id": "emulated", "token": TOKEN,
               "catalog": "main", "schema": "main", "retry_timeout_s": 5}
    options.update(kw)
    return DatabricksSource("lake", **options)


def test_stream_reads_every_row_in_bounded_batches_with_databricks_types(server):
    sizes, total, last = [], 0, None
    with source(server).stream("SELECT * FROM events ORDER BY id") as reader:
        schema = reader.schema
        for batch in reader:
            assert batch.num_rows <= BATCH_ROWS
            sizes.append(batch.num_rows)
            total += batch.num_rows
            last = batch
    assert total == ROWS and len(sizes) >= 4  # four 40,000-row chunks at least
    assert schema.field("id").type == pa.int64()
    assert schema.field("name").type == pa.string()
    assert schema.field("amount").type == pa.decimal128(10, 2)
    assert schema.field("even").type == pa.bool_()
    assert schema.field("weekday").type == pa.int32()
    assert schema.field("ratio").type == pa.float64()
    assert schema.field("seen_at").type == pa.timestamp("us", tz="Etc/UTC")
    assert schema.field("day").type == pa.date32()
    row = last.slice(last.num_rows - 1).to_pylist()[0]
    n = ROWS - 1
    assert row == {"id": n, "name": f"user-{n}", "amount": Decimal(n % 1000) * Decimal("0.25"),
                   "even": n % 2 == 0, "weekday": n % 7, "ratio": pytest.approx(n / 3.0),
                   "seen_at": datetime.fromtimestamp(
                       datetime(2026, 1, 1, tzinfo=UTC).timestamp() + n, UTC),
                   "day": date(2026, 1, 1 + n % 30)}


def test_chunks_are_fetched_one_at_a_time_as_the_reader_asks(server):
    stats = server.emulator.stats
    before = stats["downloads"]
    with source(server).stream("SELECT * FROM events") as reader:
        next(iter(reader))
        assert stats["downloads"] - before == 1  # only the first chunk so far
        rest = sum(b.num_rows for b in reader)
    assert stats["downloads"] - before == 4  # 150,000 rows in 40,000-row chunks
    assert rest > 0


def test_a_link_about_to_expire_is_asked_for_again(server):
    server.emulator.link_ttl_s = 1
    chunks = server.emulator.stats["chunks"]
    try:
        with source(server).stream("SELECT id FROM events") as reader:
            assert sum(b.num_rows for b in reader) == ROWS
    finally:
        server.emulator.link_ttl_s = 15 * 60
    assert server.emulator.stats["chunks"] - chunks == 4  # a fresh link for each chunk


def test_preview_reads_ten_rows(server):
    table = preview(source(server), "SELECT id, name FROM events ORDER BY id")
    assert table.num_rows == 10
    assert table.column("id").to_pylist() == list(range(10))


def test_an_empty_result_keeps_its_schema(server):
    with source(server).stream("SELECT id, amount, seen_at FROM events WHERE 1 = 0") as reader:
        table = reader.read_all()
    assert table.num_rows == 0
    assert table.schema == pa.schema([("id", pa.int64()), ("amount", pa.decimal128(10, 2)),
                                      ("seen_at", pa.timestamp("us", tz="Etc/UTC"))])


def test_a_slow_statement_is_polled_until_done(server):
    server.emulator.execution_delay_s = 0.3
    try:
        with source(server, wait_timeout_s=0).stream("SELECT count(*) AS n FROM events") as r:
            assert r.read_all().column("n").to_pylist() == [ROWS]
    finally:
        server.emulator.execution_delay_s = 0


def test_a_failed_query_raises_source_error_naming_the_source(server):
    with pytest.raises(SourceError) as failed, source(server).stream("SELECT nope FROM events"):
        pass
    assert "source 'lake'" in failed.value.description
    assert "nope" in failed.value.description


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_says_plainly_what_failed(server):
    messages = []

    def check(src, tables=()):
        answer = src.check(list(tables))
        messages.append(answer.message)
        return answer

    ok = check(source(server), ["events", "main.main.events"])
    assert ok.ok and "lake" in ok.message

    grant = check(source(server), ["events", "payroll"])
    assert not grant.ok and "payroll" in grant.message and "grant" in grant.message

    missing = check(source(server), ["no_such_table"])
    assert not missing.ok and "no_such_table" in missing.message
    assert "no such table" in missing.message

    bad = check(source(server, token="dapi-wrong"))
    assert not bad.ok and "refused the credentials" in bad.message

    warehouse = check(source(server, warehouse_id="nope"))
    assert not warehouse.ok and "no such SQL warehouse 'nope'" in warehouse.message

    catalog = check(source(server, catalog="nope"))
    assert not catalog.ok and "no such catalog 'nope'" in catalog.message

    schema = check(source(server, schema="nope"))
    assert not schema.ok and "no such schema 'nope'" in schema.message

    down = check(source(server, host=f"http://127.0.0.1:{closed_port()}", retry_timeout_s=1))
    assert not down.ok and "cannot reach" in down.message

    for message in messages:
        assert message.startswith("source 'lake'"), message
        assert TOKEN not in message
    assert TOKEN not in repr(source(server))


def test_the_token_never_shows(server, monkeypatch):
    config = DatabricksConfig.model_validate({
        "type": "databricks", "host": server.url, "http_path": "/sql/1.0/warehouses/emulated",
        "token": TOKEN, "catalog": "main", "schema": "main"})
    assert config.warehouse == "emulated" and config.schema_ == "main"
    src = FACTS.connect("lake", config, None)
    assert TOKEN not in repr(src) and TOKEN not in repr(src.__dict__.get("_workspace"))
    with pytest.raises(SourceError) as failed, src.stream("SELECT * FROM payroll"):
        pass
    assert TOKEN not in str(failed.value) and "42501" in failed.value.description
    assert FACTS.dialect == "databricks" and FACTS.read_only_session is False


def test_config_takes_a_warehouse_by_http_path_or_id():
    base = {"type": "databricks", "server_hostname": "adb-1.azuredatabricks.net"}
    by_path = DatabricksConfig.model_validate({**base, "http_path": "/sql/1.0/warehouses/abc123"})
    assert by_path.warehouse == "abc123"
    assert by_path.workspace == "https://adb-1.azuredatabricks.net"
    assert DatabricksConfig.model_validate({**base, "warehouse_id": "w1"}).warehouse == "w1"
    for wrong in ({**base}, {**base, "http_path": "/sql/protocolv1/o/1/0101-abc"},
                  {**base, "host": "https://x", "warehouse_id": "w"}):
        with pytest.raises(ValueError):
            DatabricksConfig.model_validate(wrong)


# ------------------------------------------------------------------ end to end

PROJECT = """
sources:
  lake:
    type: databricks
    host: {url}
    http_path: /sql/1.0/warehouses/emulated
    token: {{env: DATABRICKS_TOKEN}}
    catalog: main
    schema: default
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {cio}
models:
  contacts:
    source: lake
    primary_key: userId
    sql: SELECT id AS `userId`, email, first_name, plan, updated_at FROM main.default.contacts
syncs:
  contacts_identify:
    model: contacts
    destination: cio
    action: identify
    records: added_or_updated
  contacts_deleted:
    model: contacts
    destination: cio
    action: track
    records: deleted
    mapping:
      userId: userId
      event: {{value: "Contact Deleted"}}
"""


def test_a_databricks_model_syncs_and_resyncs_changes(workspace, emulator, monkeypatch):
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    lake = DatabricksEmulator(workspace.warehouse, tokens={TOKEN})
    with EmulatorServer(build_databricks_app(lake)).start() as served:
        workspace.write(PROJECT.format(url=served.url, cio=emulator.url))
        first = workspace.sync("contacts")
        assert first.status == "success", first.errors
        assert first.added == 300
        some = workspace.sql("SELECT id, email FROM contacts ORDER BY id LIMIT 3")
        assert emulator.state()["profiles"][some[0][0]]["email"] == some[0][1]

        changed, gone = some[1][0], some[2][0]
        workspace.sql(f"UPDATE contacts SET plan = 'enterprise-x' WHERE id = '{changed}'")
        workspace.sql(f"DELETE FROM contacts WHERE id = '{gone}'")
        workspace.sql("INSERT INTO contacts SELECT 'new-1', 'new@example.com', first_name, plan, "
                      f"company_id, updated_at FROM contacts WHERE id = '{changed}'")
        second = workspace.sync("contacts")
        assert second.status == "success", second.errors
        assert (second.added, second.updated, second.deleted) == (1, 1, 1)
        assert emulator.state()["profiles"][changed]["plan"] == "enterprise-x"
        assert lake.state()["stats"]["downloads"] >= 2


def test_without_a_token_the_sdk_default_auth_is_used(server, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID",
                 "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    nothing = DatabricksSource("lake", host=None, warehouse_id="emulated").check([])
    assert not nothing.ok and "no Databricks host or credentials" in nothing.message

    monkeypatch.setenv("DATABRICKS_HOST", server.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    from_env = DatabricksSource("lake", host=None, warehouse_id="emulated", catalog="main",
                                schema="main")
    assert from_env.check(["events"]).ok


def test_the_delta_version_moves_only_when_a_table_changes(server, database, tmp_path):
    # What the model's `source_changed` sensor asks: DESCRIBE HISTORY of each table it reads.
    import shutil

    copy = tmp_path / "w.duckdb"
    shutil.copy(database, copy)
    emu = DatabricksEmulator(copy, tokens={TOKEN})
    with EmulatorServer(build_databricks_app(emu)).start() as served:
        src = source(served)
        first = src.version(["events"])
        assert src.version(["events"]) == first
        con = duckdb.connect(str(copy))
        con.execute("UPDATE events SET name = 'changed' WHERE id = 1")
        con.close()
        moved = src.version(["events"])
        assert moved["events"] != first["events"]
