"""The Redshift source against a real PostgreSQL server (same wire protocol; no Redshift
cluster): cursor streaming, the read-only session, check(), IAM credentials through a local
stand-in for the AWS APIs, and one sync end to end."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql as q
from pydantic import ValidationError

from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, preview
from retl_assets.sources.redshift import FACTS
from retl_assets.sources.redshift.config import RedshiftConfig
from retl_assets.sources.redshift.credentials import IamAuth, PasswordAuth
from retl_assets.sources.redshift.source import RedshiftSource
from retl_assets_tests.conftest import free_port

SCHEMA = "redshift_t"
PW_ROLE, PASSWORD = "rs_pw", "S3cret-Redshift-pw-7781"  # logs on with SCRAM-SHA-256
NOGRANT_ROLE = "rs_nogrant"  # may use the schema, may not read `secret`
ROWS = 150_000


def admin(dsn: str, *statements, fetch: str | None = None):
    with psycopg.connect(dsn, autocommit=True) as con:
        for s in statements:
            con.execute(s)
        return con.execute(fetch).fetchall() if fetch else None


def require_password(dsn: str, role: str) -> None:
    """The test server trusts every local log-on; make `role` alone log on with a password
    (a pg_hba.conf line ahead of the trust lines, then a reload)."""
    line = f"host all {role} 127.0.0.1/32 scram-sha-256"
    with psycopg.connect(dsn, autocommit=True) as con:
        path = con.execute("SHOW hba_file").fetchone()[0]
        text = con.execute("SELECT pg_read_file(%s)", (path,)).fetchone()[0]
        if line in text:
            return
        lines = [line, *text.replace("\t", " ").splitlines()]
        rows = q.SQL(", ").join(q.SQL("({}, {})").format(i, q.Literal(t))
                                for i, t in enumerate(lines))
        con.execute(q.SQL("COPY (SELECT l FROM (VALUES {}) AS v(n, l) ORDER BY n) TO {}")
                    .format(rows, q.Literal(path)))
        con.execute("SELECT pg_reload_conf()")
    host, port = "127.0.0.1", int(dsn.rsplit(":", 1)[1].split("/")[0])
    deadline = time.monotonic() + 10
    while _logs_on(host, port, role, "not-the-password"):
        assert time.monotonic() < deadline, "pg_hba.conf reload did not take"
        time.sleep(0.1)


def _logs_on(host: str, port: int, role: str, password: str) -> bool:
    try:
        psycopg.connect(host=host, port=port, user=role, password=password,
                        dbname="warehouse", sslmode="disable", connect_timeout=5).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="module")
def pg(postgres_server):
    dsn = postgres_server.dsn
    admin(dsn,
          f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
          f"CREATE SCHEMA {SCHEMA}",
          f"""CREATE TABLE {SCHEMA}.wide AS SELECT
                g::int8 AS id, (g % 100)::int2 AS small, g::int4 AS medium,
                (CASE WHEN g % 10 = 0 THEN NULL ELSE g * 1.25 END)::numeric(12, 2) AS amount,
                (g / 3.0)::numeric AS ratio, g / 4.0::float8 AS quarter,
                g % 2 = 0 AS even, 'name ' || g AS name, ('v' || g)::varchar(20) AS code,
                DATE '2026-01-01' + (g % 365) AS day,
                TIMESTAMP '2026-01-01 00:00:00' + g * INTERVAL '1 second' AS local_ts,
                CASE WHEN g % 10 = 5 THEN NULL
                     ELSE TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 minute' END
                  AS seen_at,
                INTERVAL '1 day' * g AS span
              FROM generate_series(1, {ROWS}) AS g""",
          f"CREATE SEQUENCE {SCHEMA}.seq",
          f"CREATE TABLE {SCHEMA}.log (n int)",
          f"""CREATE FUNCTION {SCHEMA}.write_log() RETURNS int LANGUAGE plpgsql AS $$
              BEGIN INSERT INTO {SCHEMA}.log VALUES (1); RETURN 1; END $$""",
          f"CREATE TABLE {SCHEMA}.secret (n int)",
          f"DROP ROLE IF EXISTS {PW_ROLE}", f"DROP ROLE IF EXISTS {NOGRANT_ROLE}",
          f"CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{PASSWORD}'",
          f"CREATE ROLE {NOGRANT_ROLE} LOGIN",
          f"GRANT USAGE ON SCHEMA {SCHEMA} TO {PW_ROLE}, {NOGRANT_ROLE}",
          f"GRANT SELECT ON {SCHEMA}.wide TO {PW_ROLE}, {NOGRANT_ROLE}")
    require_password(dsn, PW_ROLE)
    return postgres_server


def read_all(src: RedshiftSource, sql: str) -> pa.Table:
    with src.stream(sql) as reader:
        return reader.read_all()


def source(pg, *, user="retl", password="unused-by-trust", port=None, database="warehouse",
           schema=SCHEMA, sslmode="prefer") -> RedshiftSource:
    return RedshiftSource("rs", "127.0.0.1", port or pg.port, database,
                          PasswordAuth(user, password), sslmode=sslmode, schema=schema)


# ------------------------------------------------------------------ streaming


def test_streams_rows_in_bounded_batches_with_types(pg):
    sizes, total, last = [], 0, None
    with source(pg, user=PW_ROLE, password=PASSWORD).stream(
            "SELECT * FROM wide ORDER BY id;") as reader:
        schema = reader.schema
        for batch in reader:
            sizes.append(batch.num_rows)
            total += batch.num_rows
            if last is None:
                first = batch.slice(0, 10).to_pylist()
            last = batch
    assert total == ROWS
    assert len(sizes) >= 3 and max(sizes) <= BATCH_ROWS, sizes
    assert schema == pa.schema([
        ("id", pa.int64()), ("small", pa.int16()), ("medium", pa.int32()),
        ("amount", pa.decimal128(12, 2)), ("ratio", pa.float64()), ("quarter", pa.float64()),
        ("even", pa.bool_()), ("name", pa.string()), ("code", pa.string()),
        ("day", pa.date32()), ("local_ts", pa.timestamp("us")),
        ("seen_at", pa.timestamp("us", tz="UTC")), ("span", pa.string())])
    row = first[4]  # id 5
    assert row["id"] == 5 and row["amount"] == Decimal("6.25") and row["seen_at"] is None
    assert row["ratio"] == pytest.approx(5 / 3) and row["even"] is False
    assert row["code"] == "v5" and row["span"] == "5 days"
    ten = first[9]
    assert ten["amount"] is None
    assert ten["seen_at"].isoformat() == "2026-01-01T00:10:00+00:00"
    assert str(ten["local_ts"]) == "2026-01-01 00:00:10"
    before_end, end = last.slice(last.num_rows - 2).to_pylist()
    assert end["id"] == ROWS and end["amount"] is None
    assert before_end["amount"] == Decimal("187498.75")


def test_rows_come_from_a_cursor_a_fetch_at_a_time(pg):
    """Mid-stream the server holds the rest: the session's last statement is a bounded FETCH
    in its open (read-only) transaction; the session is gone once the stream closes."""
    activity = (f"SELECT state, query FROM pg_stat_activity "
                f"WHERE usename = '{PW_ROLE}' AND application_name = 'retl'")
    with source(pg, user=PW_ROLE, password=PASSWORD).stream("SELECT id FROM wide") as reader:
        batches = iter(reader)
        assert next(batches).num_rows == BATCH_ROWS
        [(state, query)] = admin(pg.dsn, fetch=activity)
        assert state == "idle in transaction" and query.startswith("FETCH FORWARD 16000 FROM")
    deadline = time.monotonic() + 5  # the backend exits just after the client hangs up
    while admin(pg.dsn, fetch=activity) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin(pg.dsn, fetch=activity) == []


def test_empty_result_keeps_its_schema(pg):
    with source(pg).stream("SELECT id, amount, seen_at FROM wide WHERE false") as reader:
        table = reader.read_all()
    assert table.num_rows == 0
    assert table.schema.types == [pa.int64(), pa.decimal128(12, 2),
                                  pa.timestamp("us", tz="UTC")]


def test_preview_reads_ten_rows(pg):
    table = preview(source(pg), "SELECT id, name FROM wide ORDER BY id")
    assert table.num_rows == 10
    assert table.column("id").to_pylist() == list(range(1, 11))


def test_a_failing_query_names_the_source(pg):
    with pytest.raises(SourceError, match=r"source 'rs': query failed: .*no_such_column"):
        read_all(source(pg), "SELECT no_such_column FROM wide")


# ------------------------------------------------------------------ read-only


def test_nextval_is_refused_and_the_sequence_is_unchanged(pg):
    before = admin(pg.dsn, fetch=f"SELECT last_value, is_called FROM {SCHEMA}.seq")
    with pytest.raises(SourceError, match="read-only"):
        read_all(source(pg), "SELECT nextval('seq')")
    assert admin(pg.dsn, fetch=f"SELECT last_value, is_called FROM {SCHEMA}.seq") == before


def test_a_function_that_writes_is_refused_and_the_table_is_unchanged(pg):
    with pytest.raises(SourceError, match="read-only"):
        read_all(source(pg), "SELECT write_log()")
    assert admin(pg.dsn, fetch=f"SELECT count(*) FROM {SCHEMA}.log") == [(0,)]


# ---------------------------------------------------------------------- check


def test_check_ok_with_a_password_login(pg):
    check = source(pg, user=PW_ROLE, password=PASSWORD).check(["wide", f"{SCHEMA}.wide"])
    assert check.ok, check.message
    assert "'rs'" in check.message


def test_check_names_the_table_without_a_grant(pg):
    check = source(pg, user=NOGRANT_ROLE).check(["wide", "secret"])
    assert not check.ok
    assert "table secret" in check.message and "grant" in check.message


def test_check_says_no_such_table(pg):
    check = source(pg).check(["wide", "missing_table"])
    assert not check.ok
    assert "missing_table" in check.message and "no such table" in check.message


def test_check_says_no_such_schema_and_no_such_database(pg):
    assert "no such schema" in source(pg, schema="nope_schema").check([]).message
    check = source(pg, database="no_such_db").check([])
    assert not check.ok and 'database "no_such_db" does not exist' in check.message


def test_check_says_bad_credentials_and_never_shows_the_password(pg):
    wrong = "Wr0ng-Secret-Value-55"
    src = source(pg, user=PW_ROLE, password=wrong)
    check = src.check(["wide"])
    assert not check.ok
    assert "refused the connection: password authentication failed" in check.message
    assert "'rs'" in check.message
    with pytest.raises(SourceError) as raised:
        read_all(src, "SELECT 1")
    for text in (check.message, str(raised.value), raised.value.description, repr(src),
                 repr(src._auth)):
        assert wrong not in text
    assert raised.value.__context__ is None  # psycopg's error holds the password: dropped


def test_check_says_cannot_reach_a_closed_port(pg):
    check = source(pg, port=free_port()).check(["wide"])
    assert not check.ok and "cannot reach" in check.message


# --------------------------------------------------------------------- config


def config(**fields) -> RedshiftConfig:
    return RedshiftConfig(type="redshift", host="h", database="dev", **fields)


def test_config_takes_exactly_one_way_to_log_on():
    assert config(user="u", password="p").port == 5439
    assert config(user="u", password="p").sslmode == "require"
    assert config(cluster_identifier="c", db_user="u").schema_ is None
    assert config(workgroup="w", schema="mart").schema_ == "mart"
    for bad, says in [({}, "got none"),
                      ({"user": "u", "password": "p", "workgroup": "w"}, "exactly one"),
                      ({"cluster_identifier": "c", "workgroup": "w"}, "exactly one"),
                      ({"user": "u"}, "both `user` and `password`"),
                      ({"workgroup": "w", "db_user": "u"}, "db_user"),
                      ({"user": "u", "password": "p", "region": "eu-west-1"}, "IAM auth only"),
                      ({"user": "u", "password": "p", "sslmode": "sometimes"}, "sslmode")]:
        with pytest.raises(ValidationError, match=says):
            config(**bad)


def test_facts_and_connect_resolve_the_secret(monkeypatch, tmp_path):
    assert FACTS.dialect == "redshift" and FACTS.read_only_session
    monkeypatch.setenv("RS_TEST_PASSWORD", "from-the-env-1234")
    src = FACTS.connect("rs", config(user="u", password={"env": "RS_TEST_PASSWORD"},
                                     port=5440), tmp_path)
    assert src._auth.password == "from-the-env-1234"
    assert "from-the-env-1234" not in repr(src) + repr(src._auth)
    iam = FACTS.connect("rs", config(cluster_identifier="c", region="eu-west-1"), tmp_path)
    assert iam._auth == IamAuth(cluster_identifier="c", region="eu-west-1")


# ------------------------------------------------------------------------ IAM


class _AwsStub:
    """Answers redshift GetClusterCredentials[WithIAM] (query protocol, XML) and
    redshift-serverless GetCredentials (JSON), recording what was asked."""

    def __init__(self, user: str, password: str):
        self.user, self.password, self.calls, self.refuse = user, password, [], False
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                target = self.headers.get("X-Amz-Target")
                if target:  # redshift-serverless, JSON 1.1
                    stub.calls.append((target, json.loads(body)))
                    if stub.refuse:
                        return self._answer(400, "application/x-amz-json-1.1", json.dumps(
                            {"__type": "AccessDeniedException", "message": "not allowed"}))
                    return self._answer(200, "application/x-amz-json-1.1", json.dumps(
                        {"dbUser": stub.user, "dbPassword": stub.password,
                         "expiration": 1900000000}))
                form = {k: v[0] for k, v in parse_qs(body).items()}
                action = form.pop("Action")
                stub.calls.append((action, form))
                self._answer(200, "text/xml", (
                    '<GetClusterCredentialsResponse xmlns="http://redshift.amazonaws.com/doc/'
                    '2012-12-01/"><GetClusterCredentialsResult>'
                    f"<DbUser>{stub.user}</DbUser><DbPassword>{stub.password}</DbPassword>"
                    "<Expiration>2030-01-01T00:00:00Z</Expiration></GetClusterCredentialsResult>"
                    "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
                    "</GetClusterCredentialsResponse>").replace("GetClusterCredentials", action))

            def _answer(self, status, ctype, text):
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def aws(monkeypatch, tmp_path):
    stub = _AwsStub(PW_ROLE, PASSWORD)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_REDSHIFT", stub.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS", stub.url)
    yield stub
    stub.server.shutdown()


def iam_source(pg, **auth) -> RedshiftSource:
    return RedshiftSource("rs", "127.0.0.1", pg.port, "warehouse",
                          IamAuth(region="eu-west-1", **auth), sslmode="prefer", schema=SCHEMA)


def test_iam_cluster_credentials_log_on(pg, aws):
    check = iam_source(pg, cluster_identifier="prod", db_user="analyst").check(["wide"])
    assert check.ok, check.message
    assert aws.calls == [("GetClusterCredentials", {
        "Version": "2012-12-01", "ClusterIdentifier": "prod", "DbUser": "analyst",
        "DbName": "warehouse", "DurationSeconds": "900", "AutoCreate": "false"})]


def test_iam_identity_and_serverless_credentials(pg, aws):
    assert iam_source(pg, cluster_identifier="prod").check(["wide"]).ok
    with iam_source(pg, workgroup="analytics").stream("SELECT count(*) AS n FROM wide") as reader:
        assert reader.read_all().column("n").to_pylist() == [ROWS]
    assert aws.calls == [
        ("GetClusterCredentialsWithIAM", {"Version": "2012-12-01", "ClusterIdentifier": "prod",
                                          "DbName": "warehouse", "DurationSeconds": "900"}),
        ("RedshiftServerless.GetCredentials",
         {"workgroupName": "analytics", "dbName": "warehouse", "durationSeconds": 900})]


def test_iam_refusal_is_a_plain_answer(pg, aws):
    aws.refuse = True
    check = iam_source(pg, workgroup="analytics").check(["wide"])
    assert not check.ok
    assert "AWS refused" in check.message and "AccessDeniedException" in check.message


# ---------------------------------------------------------------------- e2e

PROJECT = """
sources:
  warehouse:
    type: redshift
    host: 127.0.0.1
    port: {port}
    database: warehouse
    user: {user}
    password: {{env: REDSHIFT_PASSWORD}}
    sslmode: prefer
    schema: redshift_e2e
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {url}
models:
  people:
    source: warehouse
    primary_key: id
    sql: |
      SELECT id, id::varchar AS "userId", NVL(email, 'none') AS email, score, seen_at
      FROM people
syncs:
  people_identify:
    model: people
    destination: cio
    action: identify
"""


def test_redshift_source_syncs_changes(workspace, emulator, pg, monkeypatch):
    """A model in Redshift SQL: NVL is Redshift's and not PostgreSQL's, so the test server
    gets an nvl() function and runs the model's SQL as written."""
    dsn = pg.dsn
    admin(dsn, "DROP SCHEMA IF EXISTS redshift_e2e CASCADE", "CREATE SCHEMA redshift_e2e",
          "CREATE FUNCTION redshift_e2e.nvl(anyelement, anyelement) RETURNS anyelement "
          "LANGUAGE sql IMMUTABLE AS 'SELECT coalesce($1, $2)'",
          "CREATE TABLE redshift_e2e.people (id int, email text, score numeric(8,2), "
          "seen_at timestamptz)",
          "INSERT INTO redshift_e2e.people SELECT g, 'p' || g || '@example.com', g * 1.5, "
          "'2026-01-01T00:00:00Z'::timestamptz + g * interval '1 hour' "
          "FROM generate_series(1, 300) g",
          f"GRANT USAGE ON SCHEMA redshift_e2e TO {PW_ROLE}",
          f"GRANT SELECT ON ALL TABLES IN SCHEMA redshift_e2e TO {PW_ROLE}")
    monkeypatch.setenv("REDSHIFT_PASSWORD", PASSWORD)
    workspace.write(PROJECT.format(port=pg.port, user=PW_ROLE, url=emulator.url))

    first = workspace.sync("people")
    assert first.status == "success", first.errors
    assert first.added == 300
    assert emulator.state()["profiles"]["7"] == {
        "id": 7, "email": "p7@example.com", "score": 10.5, "seen_at": "2026-01-01T07:00:00.000Z"}

    admin(dsn, "UPDATE redshift_e2e.people SET score = 99 WHERE id = 7",
          "DELETE FROM redshift_e2e.people WHERE id = 8",
          "INSERT INTO redshift_e2e.people VALUES (1000, NULL, 1, now())")
    second = workspace.sync("people")
    assert second.status == "success", second.errors
    assert (second.added, second.updated, second.deleted) == (1, 1, 1)
    assert second.syncs["people_identify"]["sent"] == 2
    assert emulator.state()["profiles"]["7"]["score"] == 99
    assert emulator.state()["profiles"]["1000"]["email"] == "none"
