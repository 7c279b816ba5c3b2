"""The BigQuery emulator, driven over real HTTP by google-cloud-bigquery and by raw requests."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from google.api_core import exceptions as api
from google.auth.credentials import Credentials
from google.cloud import bigquery

from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.bigquery import BigQueryEmulator, build_bigquery_app, make_app
from retl_assets.emulators.common import Faults

TOKEN = "ya29.emulator-token"
PROJECT = "retl-test"


class Token(Credentials):
    """A fixed bearer token (refresh does nothing, so a refused token stays refused)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def refresh(self, request: Any) -> None:
        pass


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bq") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA crm")
    con.execute("CREATE TABLE crm.contacts AS SELECT i AS id, 'user' || i || '@example.com' "
                "AS email FROM range(25000) t(i)")
    con.execute("CREATE TABLE crm.secret AS SELECT 1 AS id")
    con.execute("""CREATE TABLE crm.types AS SELECT
        42::BIGINT AS i, 1.5::DOUBLE AS f, 12.34::DECIMAL(10, 2) AS n, true AS b,
        'text' AS s, TIMESTAMPTZ '2026-01-01 00:00:00.123456+00' AS ts,
        DATE '2026-02-03' AS d, TIMESTAMP '2026-02-03 04:05:06' AS dtm,
        TIME '04:05:06.5' AS tm, '\\x00\\xff'::BLOB AS by, [1, 2] AS arr,
        {'k': 'v', 'n': 2} AS rec, NULL::BIGINT AS nothing""")
    con.close()
    return path


Serve = Callable[..., tuple[bigquery.Client, BigQueryEmulator, str]]


@pytest.fixture
def serve(database) -> Iterator[Serve]:
    opened: list[tuple[EmulatorServer, bigquery.Client]] = []

    def _serve(token: str = TOKEN, **args: Any) -> tuple[bigquery.Client, BigQueryEmulator, str]:
        args.setdefault("tokens", {TOKEN})
        args.setdefault("allow", {"crm.contacts", "crm.types"})
        emulator = BigQueryEmulator(database, **args)
        server = EmulatorServer(build_bigquery_app(emulator)).start()
        client = bigquery.Client(project=PROJECT, credentials=Token(token),
                                 client_options={"api_endpoint": server.url})
        opened.append((server, client))
        return client, emulator, server.url

    yield _serve
    for server, client in opened:
        client.close()
        server.stop()


def raw(url: str, method: str, path: str, token: str | None = TOKEN, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{url}/bigquery/v2/projects/{PROJECT}{path}",
                         headers=headers, timeout=10, **kw)


def assert_error_shape(answer: httpx.Response, status: int, reason: str) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["status"], str) and error["status"].isupper()
    [item] = error["errors"]
    assert item["reason"] == reason and item["domain"] == "global" and item["message"]
    return error


def query(url: str, sql: str, **body) -> httpx.Response:
    return raw(url, "POST", "/queries", json={"query": sql, "useLegacySql": False, **body})


# ------------------------------------------------------------------ auth


def test_requests_without_a_valid_bearer_token_are_refused_401(serve: Serve) -> None:
    _client, emulator, url = serve()
    missing = assert_error_shape(raw(url, "POST", "/queries", token=None,
                                     json={"query": "SELECT 1", "useLegacySql": False}),
                                 401, "required")
    assert missing["status"] == "UNAUTHENTICATED"
    wrong = raw(url, "POST", "/queries", token="not-the-token",
                json={"query": "SELECT 1", "useLegacySql": False})
    assert_error_shape(wrong, 401, "authError")

    bad_client, _, _ = serve(token="not-the-token")
    with pytest.raises(api.Unauthorized):
        bad_client.query_and_wait("SELECT 1")
    assert emulator.state()["stats"]["queries"] == 0  # nothing ran
    assert query(url, "SELECT 1").status_code == 200


# ------------------------------------------------------------------ paging


def test_a_25000_row_table_comes_in_pages_linked_by_page_tokens(serve: Serve) -> None:
    client, emulator, url = serve()
    rows = client.query_and_wait("SELECT id, email FROM crm.contacts ORDER BY id",
                                 page_size=10_000)
    assert rows.total_rows == 25_000
    ids = [row["id"] for row in rows]
    assert ids == list(range(25_000))
    stats = emulator.state()["stats"]
    assert stats["page_sizes"][-3:] == [10_000, 10_000, 5_000]
    assert stats["calls"]["jobs.query"] == 1 and stats["calls"]["jobs.getQueryResults"] == 2

    # The same pages by hand: pageToken links them, the last one has none.
    first = query(url, "SELECT id FROM crm.contacts ORDER BY id", maxResults=12_000).json()
    assert first["jobComplete"] is True and first["totalRows"] == "25000"
    assert len(first["rows"]) == 12_000 and first["pageToken"]
    job = first["jobReference"]["jobId"]
    second = raw(url, "GET", f"/queries/{job}",
                 params={"maxResults": 12_000, "pageToken": first["pageToken"]}).json()
    third = raw(url, "GET", f"/queries/{job}",
                params={"maxResults": 12_000, "pageToken": second["pageToken"]}).json()
    assert [len(p["rows"]) for p in (second, third)] == [12_000, 1_000]
    assert "pageToken" not in third
    assert second["rows"][0] == {"f": [{"v": "12000"}]}


def test_a_page_holds_at_most_max_page_bytes_of_rows(serve: Serve) -> None:
    client, _emulator, url = serve(max_page_bytes=100_000)
    answer = query(url, "SELECT id, email FROM crm.contacts").json()
    assert 0 < len(answer["rows"]) < 25_000 and "pageToken" in answer
    assert len(httpx.Response(200, json=answer["rows"]).content) <= 100_000
    assert sum(1 for _ in client.query_and_wait("SELECT id FROM crm.contacts")) == 25_000


def test_jobs_insert_get_and_tabledata_list_on_the_destination_table(serve: Serve) -> None:
    client, emulator, _url = serve()
    job = client.query("SELECT id FROM crm.contacts WHERE id < 5 ORDER BY id")
    assert [r["id"] for r in job.result()] == [0, 1, 2, 3, 4]
    again = client.get_job(job.job_id)
    assert again.state == "DONE" and again.statement_type == "SELECT"
    listed = client.list_rows(again.destination, max_results=3)
    assert [r["id"] for r in listed] == [0, 1, 2]
    assert {"jobs.insert", "jobs.get", "tabledata.list"} <= set(emulator.state()["stats"]["calls"])


# ------------------------------------------------------------------ types


def test_values_arrive_as_strings_and_round_trip_to_the_clients_types(serve: Serve,
                                                                      database) -> None:
    client, _emulator, url = serve()
    answer = query(url, "SELECT * FROM crm.types",
                   formatOptions={"useInt64Timestamp": True}).json()
    types = {f["name"]: (f["type"], f["mode"]) for f in answer["schema"]["fields"]}
    assert types == {
        "i": ("INTEGER", "NULLABLE"), "f": ("FLOAT", "NULLABLE"), "n": ("NUMERIC", "NULLABLE"),
        "b": ("BOOLEAN", "NULLABLE"), "s": ("STRING", "NULLABLE"),
        "ts": ("TIMESTAMP", "NULLABLE"), "d": ("DATE", "NULLABLE"),
        "dtm": ("DATETIME", "NULLABLE"), "tm": ("TIME", "NULLABLE"), "by": ("BYTES", "NULLABLE"),
        "arr": ("INTEGER", "REPEATED"), "rec": ("RECORD", "NULLABLE"),
        "nothing": ("INTEGER", "NULLABLE")}
    cells = [c["v"] for c in answer["rows"][0]["f"]]
    assert cells[:10] == ["42", "1.5", "12.34", "true", "text", "1767225600123456",
                          "2026-02-03", "2026-02-03T04:05:06", "04:05:06.500000", "AP8="]
    assert cells[10] == [{"v": "1"}, {"v": "2"}]
    assert cells[11] == {"f": [{"v": "v"}, {"v": "2"}]}
    assert cells[12] is None
    # Without useInt64Timestamp a TIMESTAMP is epoch seconds as a double's text.
    seconds = query(url, "SELECT ts FROM crm.types").json()["rows"][0]["f"][0]["v"]
    assert seconds == "1.767225600123456E9"

    [row] = list(client.query_and_wait("SELECT * FROM crm.types"))
    assert row["i"] == 42 and row["f"] == 1.5 and row["n"] == decimal.Decimal("12.34")
    assert row["b"] is True and row["s"] == "text"
    assert row["ts"] == dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)
    assert row["d"] == dt.date(2026, 2, 3) and row["dtm"] == dt.datetime(2026, 2, 3, 4, 5, 6)
    assert row["tm"] == dt.time(4, 5, 6, 500000) and row["by"] == b"\x00\xff"
    assert row["arr"] == [1, 2] and row["rec"] == {"k": "v", "n": 2}
    assert row["nothing"] is None


def test_bigquery_sql_is_translated_for_duckdb(serve: Serve) -> None:
    client, _, _ = serve()
    rows = client.query_and_wait(
        f"SELECT COUNT(*) AS n, TIMESTAMP_SECONDS(1767225600) AS t FROM `{PROJECT}.crm.contacts` "
        "WHERE SAFE_CAST(id AS STRING) LIKE '1%'")
    [row] = list(rows)
    assert row["n"] == 11_111
    assert row["t"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


# ------------------------------------------------------------------ refusals


def test_unknown_datasets_and_tables_are_404_not_found(serve: Serve) -> None:
    client, _, url = serve()
    error = assert_error_shape(query(url, "SELECT * FROM nods.contacts"), 404, "notFound")
    assert "Dataset retl-test:nods" in error["message"]
    error = assert_error_shape(query(url, "SELECT * FROM crm.nothing"), 404, "notFound")
    assert "Table retl-test:crm.nothing" in error["message"]
    assert_error_shape(raw(url, "GET", "/datasets/nods"), 404, "notFound")
    assert_error_shape(raw(url, "GET", "/datasets/crm/tables/nothing"), 404, "notFound")
    assert_error_shape(raw(url, "GET", "/queries/no-such-job"), 404, "notFound")
    with pytest.raises(api.NotFound):
        client.query_and_wait("SELECT * FROM crm.nothing")
    with pytest.raises(api.NotFound):
        client.get_dataset("nods")


def test_tables_outside_the_allow_list_are_403_access_denied(serve: Serve) -> None:
    client, _, url = serve()
    error = assert_error_shape(query(url, "SELECT * FROM crm.secret"), 403, "accessDenied")
    assert "crm.secret" in error["message"] and error["status"] == "PERMISSION_DENIED"
    with pytest.raises(api.Forbidden):
        client.query_and_wait("SELECT c.id FROM crm.contacts c JOIN crm.secret s USING (id)")
    with pytest.raises(api.Forbidden):
        client.get_table("crm.secret")


def test_bad_sql_is_400_invalid_query_and_legacy_sql_is_refused(serve: Serve) -> None:
    client, _, url = serve()
    error = assert_error_shape(query(url, "SELEC 1 FRM"), 400, "invalidQuery")
    assert error["message"].startswith("Syntax error")
    assert error["errors"][0]["location"] == "query"
    assert_error_shape(query(url, "SELECT nope FROM crm.contacts"), 400, "invalidQuery")
    legacy = raw(url, "POST", "/queries", json={"query": "SELECT 1"})  # REST default: legacy
    assert_error_shape(legacy, 400, "invalidQuery")
    assert_error_shape(query(url, "SELECT * FROM contacts"), 400, "invalidQuery")  # no dataset
    with pytest.raises(api.BadRequest):
        client.query_and_wait("SELEC 1")
    job = client.query("SELEC 1")  # jobs.insert: the job is created, and fails
    with pytest.raises(api.BadRequest):
        job.result()
    assert job.error_result["reason"] == "invalidQuery"


def test_statements_report_their_type(serve: Serve, tmp_path) -> None:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA s; CREATE TABLE s.t AS SELECT 1 AS a")
    con.close()
    emulator = BigQueryEmulator(path, tokens={TOKEN})
    with EmulatorServer(build_bigquery_app(emulator)) as server:
        client = bigquery.Client(project=PROJECT, credentials=Token(TOKEN),
                                 client_options={"api_endpoint": server.url})
        job = client.query("INSERT INTO s.t (a) VALUES (2), (3)")
        job.result()
        assert job.statement_type == "INSERT" and job.num_dml_affected_rows == 2
        assert [r["n"] for r in client.query_and_wait("SELECT COUNT(*) AS n FROM s.t")] == [3]
        client.close()


def test_tables_get_moves_last_modified_time_when_rows_change(serve: Serve, tmp_path) -> None:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA s; CREATE TABLE s.t AS SELECT 1 AS a")
    con.close()
    emulator = BigQueryEmulator(path, tokens={TOKEN})
    with EmulatorServer(build_bigquery_app(emulator)) as server:
        client = bigquery.Client(project=PROJECT, credentials=Token(TOKEN),
                                 client_options={"api_endpoint": server.url})
        first = client.get_table("s.t")
        assert first.num_rows == 1 and [f.name for f in first.schema] == ["a"]
        assert client.get_table("s.t").modified == first.modified
        con = duckdb.connect(str(path))
        con.execute("UPDATE s.t SET a = 2")
        con.close()
        assert client.get_table("s.t").modified > first.modified
        assert client.get_dataset("s").dataset_id == "s"
        client.close()


# ------------------------------------------------------------------ faults


def test_injected_429s_say_rate_limit_exceeded_and_the_client_retries(serve: Serve) -> None:
    client, emulator, url = serve()
    emulator.set_faults(rate_429=1)
    error = assert_error_shape(query(url, "SELECT 1"), 429, "rateLimitExceeded")
    assert error["status"] == "RESOURCE_EXHAUSTED"


    # Seed 1 draws 0.13 then 0.85: the first jobs.query is refused, its retry answered.
    client, emulator, url = serve(faults=Faults(rate_429=0.5), seed=1)
    rows = client.query_and_wait("SELECT id FROM crm.contacts WHERE id < 3 ORDER BY id")
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert emulator.state()["stats"]["status"] == {"429": 1, "200": 1}


def test_the_rate_limit_answers_429_over_the_window(serve: Serve) -> None:
    _client, _emulator, url = serve(rate_limit=(2, 60))
    assert query(url, "SELECT 1").status_code == 200
    assert query(url, "SELECT 1").status_code == 200
    assert_error_shape(query(url, "SELECT 1"), 429, "rateLimitExceeded")


def test_make_app_serves_the_database(database) -> None:
    app = make_app("bigquery", {TOKEN}, Faults(), None, database=database)
    with EmulatorServer(app) as server:
        answer = raw(server.url, "GET", "/datasets/crm")
        assert answer.status_code == 200
        assert answer.json()["datasetReference"] == {"projectId": PROJECT, "datasetId": "crm"}
        assert httpx.get(f"{server.url}/_emulator/state").json()["stats"]["requests"] == 1
