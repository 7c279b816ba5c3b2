"""The BigQuery source, through google-cloud-bigquery, against the REST API's emulator."""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from retl_assets import vendors
from retl_assets.emulators import EmulatorServer
from retl_assets.emulators.bigquery import BigQueryEmulator, build_bigquery_app
from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, preview
from retl_assets.sources.bigquery.source import BigQuerySource

TOKEN = "ya29.sekrit-bq-token-1234"
PROJECT = "retl-test"
ROWS = 150_000
JAN_1_2026 = 1767225600


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bq") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA crm")
    con.execute(f"""CREATE TABLE crm.events AS SELECT i AS id, 'user' || i || '@example.com'
        AS email, i * 0.5 AS amount,
        TIMESTAMPTZ '2025-12-31 00:00:00+00' + i * INTERVAL 1 second AS seen_at
        FROM range({ROWS}) t(i)""")
    con.execute("CREATE TABLE crm.secret AS SELECT 1 AS id")
    con.close()
    return path


Serve = Callable[..., tuple[BigQueryEmulator, str]]


@pytest.fixture(autouse=True)
def no_default_credentials(tmp_path, monkeypatch) -> None:
    """Application Default Credentials find nothing here, and fast: no key file, no gcloud
    configuration, no metadata server probed (what NO_GCE_CHECK=true does, read at import)."""
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)


@pytest.fixture
def serve(database) -> Iterator[Serve]:
    servers: list[EmulatorServer] = []

    def _serve(**args: Any) -> tuple[BigQueryEmulator, str]:
        args.setdefault("tokens", {TOKEN})
        args.setdefault("projects", {PROJECT})
        args.setdefault("allow", {"crm.events"})
        emulator = BigQueryEmulator(args.pop("database", database), **args)
        server = EmulatorServer(build_bigquery_app(emulator)).start()
        servers.append(server)
        return emulator, server.url

    yield _serve
    for server in servers:
        server.stop()


def source(url: str, **kw: Any) -> BigQuerySource:
    kw.setdefault("project", PROJECT)
    kw.setdefault("dataset", "crm")
    kw.setdefault("access_token", TOKEN)
    kw.setdefault("retry_seconds", 3)
    return BigQuerySource("bq", api_endpoint=url, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ stream


def test_a_large_result_streams_page_by_page_in_bounded_batches(serve: Serve) -> None:
    # 8 MB pages: two of them for 150k rows, each over BATCH_ROWS, so re-batching shows.
    emulator, url = serve(max_page_bytes=8 * 1024 * 1024)
    sizes, ids, checked = [], 0, 0
    with source(url).stream("SELECT id, email, amount, seen_at FROM events ORDER BY id") as r:
        assert r.schema.field("seen_at").type == pa.timestamp("us", tz="UTC")
        assert r.schema.field("id").type == pa.int64()
        for n, batch in enumerate(r):
            if n == 0:  # memory stays flat: the later pages are not fetched yet
                pages_at_first = emulator.state()["stats"]["pages"]
            sizes.append(batch.num_rows)
            column = batch.column("id").to_pylist()
            assert column == list(range(ids, ids + batch.num_rows))
            ids += batch.num_rows
            row = batch.slice(batch.num_rows // 2, 1).to_pylist()[0]
            i = row["id"]
            assert row["email"] == f"user{i}@example.com"
            assert float(row["amount"]) == i * 0.5
            assert row["seen_at"] == (dt.datetime(2025, 12, 31, tzinfo=dt.UTC)
                                      + dt.timedelta(seconds=i))
            checked += 1
    assert ids == ROWS and max(sizes) <= BATCH_ROWS
    stats = emulator.state()["stats"]
    assert stats["pages"] >= 2 and pages_at_first < stats["pages"]
    assert max(stats["page_sizes"]) > BATCH_ROWS  # a page is split into several batches
    assert stats["calls"]["jobs.query"] == 1 and stats["calls"]["jobs.getQueryResults"] >= 1


def test_a_timestamp_seconds_filter_is_answered(serve: Serve) -> None:
    _, url = serve()
    sql = (f"SELECT COUNT(*) AS n, MIN(seen_at) AS first FROM `{PROJECT}.crm.events` "
           f"WHERE seen_at >= TIMESTAMP_SECONDS({JAN_1_2026})")
    with source(url).stream(sql) as reader:
        [row] = reader.read_all().to_pylist()
    assert row["n"] == ROWS - 86_400
    assert row["first"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_preview_reads_ten_rows_and_an_empty_result_keeps_its_schema(serve: Serve) -> None:
    emulator, url = serve()
    table = preview(source(url), "SELECT id, email FROM events ORDER BY id")
    assert table.num_rows == 10 and table.column("id").to_pylist() == list(range(10))
    assert emulator.state()["stats"]["rows_sent"] == 10  # the LIMIT ran in the warehouse

    with source(url).stream("SELECT id, email, seen_at FROM events WHERE id < 0") as reader:
        empty = reader.read_all()
    assert empty.num_rows == 0
    assert empty.schema.names == ["id", "email", "seen_at"]
    assert empty.schema.field("email").type == pa.string()


def test_a_refused_query_is_a_source_error_with_bigquerys_first_line(serve: Serve) -> None:
    _, url = serve()
    with pytest.raises(SourceError) as bad, source(url).stream("SELECT nope FROM events"):
        pass
    assert bad.value.description.startswith("source 'bq': query failed: ")
    assert "nope" in bad.value.description and "http" not in bad.value.description
    denied = "Access Denied: Table retl-test:crm.secret"
    with pytest.raises(SourceError, match=denied), source(url).stream("SELECT * FROM secret"):
        pass


def test_a_page_that_fails_mid_stream_is_a_source_error(serve: Serve) -> None:
    emulator, url = serve(max_page_bytes=512 * 1024)
    sql = "SELECT id, email FROM events"
    with pytest.raises(SourceError, match="source 'bq'"), \
            source(url, retry_seconds=1).stream(sql) as reader:
        next(iter(reader))
        emulator.set_faults(dead=True)
        for _ in reader:
            pass


# ------------------------------------------------------------------ check


def test_check_passes_when_every_table_is_readable(serve: Serve) -> None:
    _, url = serve()
    answer = source(url).check(["events", f"`{PROJECT}.crm.events`", "crm.events"])
    assert answer.ok, answer.message
    assert answer.message.startswith("source 'bq'") and "3 table(s) readable" in answer.message


def test_check_names_the_table_that_lacks_a_grant(serve: Serve) -> None:
    _, url = serve()
    answer = source(url).check(["events", "crm.secret"])
    assert not answer.ok
    assert "lack a grant" in answer.message and "crm.secret" in answer.message
    assert answer.message.startswith("source 'bq'")


def test_check_names_a_missing_dataset_project_or_table(serve: Serve) -> None:
    _, url = serve()
    answer = source(url, dataset="nods").check([])
    assert not answer.ok and f"no such dataset {PROJECT}.nods" in answer.message
    answer = source(url).check(["elsewhere.events"])
    assert not answer.ok and f"no such dataset {PROJECT}.elsewhere" in answer.message
    answer = source(url).check(["events", "crm.nothing"])
    assert not answer.ok and "no such table crm.nothing" in answer.message
    answer = source(url, project="no-such-project").check([])
    assert not answer.ok and "no such project no-such-project" in answer.message


def test_check_says_when_the_endpoint_cannot_be_reached(serve: Serve) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    answer = source(url, retry_seconds=1).check(["events"])
    assert not answer.ok and f"cannot reach {url}" in answer.message
    with pytest.raises(SourceError, match="cannot reach"), source(url, retry_seconds=1).stream("SELECT 1"):
        pass


def test_credentials_are_refused_plainly_and_never_shown(serve: Serve, tmp_path) -> None:
    _, url = serve()
    wrong = "ya29.wrong-sekrit-token"
    messages = []
    answer = source(url, access_token=wrong).check(["events"])
    assert not answer.ok and "refused the credentials" in answer.message
    messages.append(answer.message)
    with pytest.raises(SourceError) as refused, source(url, access_token=wrong).stream("SELECT 1"):
        pass
    messages.append(refused.value.description)
    answer = source(url, access_token=None).check([])  # no credentials found at all
    assert not answer.ok and "none were found" in answer.message
    messages.append(answer.message)
    key = '{"type": "service_account", "private_key": "sekrit-key-material"'  # cut short
    answer = source(url, access_token=None, credentials_file=key).check([])
    assert not answer.ok
    messages.append(answer.message)
    for failing in (source(url, dataset="nods"), source(url), source(url, project="nope")):
        messages.append(failing.check(["crm.secret"]).message)
    for message in messages:
        assert message.startswith("source 'bq'")
        for secret in (TOKEN, wrong, "sekrit"):
            assert secret not in message, message


def test_a_service_account_key_file_gets_its_token_from_the_token_uri(serve: Serve,
                                                                     tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    account = f"retl@{PROJECT}.iam.gserviceaccount.com"
    emulator, url = serve(service_accounts={account: public})
    key = {"type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
           "private_key": private.private_bytes(
               serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
               serialization.NoEncryption()).decode(),
           "client_email": account, "client_id": "1", "token_uri": f"{url}/token"}
    (tmp_path / "key.json").write_text(json.dumps(key))
    good = BigQuerySource("bq", project=PROJECT, dataset="crm", credentials_file="key.json",
                          api_endpoint=url, retry_seconds=3, root=tmp_path)
    answer = good.check(["events"])
    assert answer.ok, answer.message
    assert emulator.state()["stats"]["calls"]["oauth.token"] == 1

    key["client_email"] = f"stranger@{PROJECT}.iam.gserviceaccount.com"
    (tmp_path / "stranger.json").write_text(json.dumps(key))
    stranger = BigQuerySource("bq", project=PROJECT, credentials_file=str(
        tmp_path / "stranger.json"), api_endpoint=url, retry_seconds=3)
    answer = stranger.check([])
    assert not answer.ok and "refused the credentials" in answer.message
    assert "PRIVATE KEY" not in answer.message


def test_the_version_moves_when_a_table_changes(serve: Serve, tmp_path) -> None:
    path = tmp_path / "small.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA crm; CREATE TABLE crm.people AS SELECT 1 AS id")
    con.close()
    _, url = serve(database=path, allow=None)
    bq = source(url)
    before = bq.version(["people", f"`{PROJECT}.crm.people`"])
    assert before["people"] == before[f"`{PROJECT}.crm.people`"]
    assert before["people"].tzinfo is not None
    assert bq.version(["people"]) == {"people": before["people"]}
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO crm.people VALUES (2)")
    con.close()
    assert bq.version(["crm.people"])["crm.people"] > before["people"]
    with pytest.raises(SourceError, match="Not found: Table"):
        bq.version(["crm.nothing"])


# ------------------------------------------------------------------ registry


def test_the_registry_knows_bigquery_and_its_config(tmp_path) -> None:
    facts = vendors.source("bigquery")
    assert facts.dialect == "bigquery" and facts.read_only_session is False
    assert "emulator" in facts.tested
    config = facts.config(type="bigquery", project=PROJECT, dataset="crm",
                          access_token={"env": "BQ_TOKEN"}, api_endpoint="http://127.0.0.1:1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BQ_TOKEN", TOKEN)
        opened = facts.connect("bq", config, tmp_path)
    assert isinstance(opened, BigQuerySource) and opened.dialect == "bigquery"
    assert TOKEN not in repr(vars(opened).get("name")) and opened.project == PROJECT
    assert hasattr(vendors.emulator("bigquery"), "make_app")
