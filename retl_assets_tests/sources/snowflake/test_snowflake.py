"""The Snowflake source through the real connector (opened by dagster-snowflake's resource)
against fakesnow: patched in process, and its HTTP server reached via host/port/protocol."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from pathlib import Path

import fakesnow
import fakesnow.server
import pyarrow as pa
import pytest
import snowflake.connector
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retl_assets.errors import SourceError
from retl_assets.project.schema import EnvRef
from retl_assets.sources.base import BATCH_ROWS, preview
from retl_assets.sources.snowflake import FACTS
from retl_assets.sources.snowflake.config import SnowflakeConfig
from retl_assets_tests.conftest import free_port

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
LOGINS: list[dict] = []  # the session parameters each login asked the guarded server for
PASSWORD = "s3cr3t-Pa55-word-zq"  # what the guarded server accepts
WRONG = "wr0ng-Pa55-word-xk"


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def serve(app, port: int):
    """uvicorn on loopback in a thread, stopped (bounded) on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="fakesnow-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def guarded_app() -> Starlette:
    """fakesnow's HTTP API, except that login refuses any password but PASSWORD, answering
    as Snowflake does (HTTP 200, success false, GS code 390100). fakesnow accepts any."""

    async def login(request: Request):
        import json

        import gzip

        raw = await request.body()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
        data = body["data"]
        LOGINS.append(data.get("SESSION_PARAMETERS", {}))
        if data.get("AUTHENTICATOR") == "SNOWFLAKE_JWT":  # key-pair: verify the signature
            import jwt

            try:
                jwt.decode(data["TOKEN"], KEY.public_key(), algorithms=["RS256"])
            except jwt.InvalidTokenError:
                return JSONResponse({"data": None, "code": "390144", "success": False,
                                     "message": "JWT token is invalid."})
        elif data.get("PASSWORD") != PASSWORD:
            return JSONResponse({"data": None, "code": "390100", "success": False,
                                 "message": "Incorrect username or password was specified."})
        return await fakesnow.server.login_request(_Replay(request, body))

    routes = [Route("/session/v1/login-request", login, methods=["POST"])]
    routes += [r for r in fakesnow.server.routes if r.path != "/session/v1/login-request"]
    return Starlette(routes=routes)


class _Replay:
    """The request again, its body already read (fakesnow's handler reads it once more)."""

    def __init__(self, request: Request, body: dict):
        import json

        self.query_params, self.headers = request.query_params, {}
        self._body = json.dumps(body).encode()

    async def body(self) -> bytes:
        return self._body


@pytest.fixture(scope="module")
def sf_port():
    with serve(guarded_app(), free_port()) as port:
        yield port


@pytest.fixture
def database():
    return f"DB_{uuid.uuid4().hex[:10]}".upper()  # fakesnow's server shares one engine


def config(port: int | None = None, **over) -> SnowflakeConfig:
    fields = dict(type="snowflake", account="retltest", user="retl", password=PASSWORD,
                  schema="PUBLIC", login_timeout=5, network_timeout=10)
    if port is not None:
        fields.update(host="127.0.0.1", port=port, protocol="http")
    fields.update(over)
    return SnowflakeConfig.model_validate(fields)


def source(port: int | None = None, **over):
    return FACTS.connect("wh", config(port, **over), Path("."))


def run(port: int, database: str, *statements: str) -> None:
    """Seed through the real connector, straight to the server."""
    con = snowflake.connector.connect(
        account="retltest", user="retl", password=PASSWORD, host="127.0.0.1", port=port,
        protocol="http", database=database, schema="PUBLIC", network_timeout=10,
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False})
    try:
        cur = con.cursor()
        for s in statements:
            cur.execute(s)
    finally:
        con.close()


USERS = """CREATE OR REPLACE TABLE users (id NUMBER(38,0), "userId" VARCHAR, email VARCHAR,
             score NUMBER(10,2), signed_up NUMBER(38,0), updated_at TIMESTAMP_NTZ)"""


def seed_users(port: int, database: str, n: int) -> None:
    run(port, database, USERS,
        f"""INSERT INTO users SELECT seq4(), 'u' || seq4(), 'u' || seq4() || '@example.com',
            1.25, 1700000000 + seq4(), DATEADD(second, seq4(), CURRENT_TIMESTAMP::TIMESTAMP_NTZ)
            FROM TABLE(GENERATOR(ROWCOUNT => {n}))""")


# ------------------------------------------------------------------ config


def test_config_wants_exactly_one_way_to_sign_in():
    with pytest.raises(ValueError, match="exactly one way to sign in.*found none"):
        SnowflakeConfig.model_validate(dict(type="snowflake", account="a", user="u"))
    with pytest.raises(ValueError, match="found `password` and `private_key_path`"):
        config(private_key_path="key.p8")
    with pytest.raises(ValueError, match="extra"):
        config(passwd="x")
    assert config(password=None, private_key={"env": "SF_KEY"}).private_key == EnvRef(env="SF_KEY")
    assert FACTS.dialect == "snowflake" and FACTS.read_only_session is False


def test_session_pins_one_statement_and_tags_queries(sf_port, database):
    LOGINS.clear()
    assert source(sf_port, database=database).check([]).ok
    asked = LOGINS[-1]  # what the real connector sent on the wire at login
    assert asked["MULTI_STATEMENT_COUNT"] == 1 and asked["QUERY_TAG"] == "retl"
    assert asked.get("CLIENT_VALIDATE_DEFAULT_PARAMETERS") is True


# ------------------------------------------------------- in process (patch)


def test_patched_in_process_check_names_tables_and_database():
    with fakesnow.patch():
        con = snowflake.connector.connect(database="PDB", schema="PUBLIC")
        con.cursor().execute('CREATE TABLE contacts (id INT, "userId" VARCHAR)')
        src = source(database="PDB")
        ok = src.check(["contacts", "PDB.PUBLIC.contacts"])
        assert ok.ok, ok.message
        assert "'wh'" in ok.message and "contacts" in ok.message
        bad = src.check(["contacts", "no_such_table"])
        assert not bad.ok
        assert "table no_such_table: no such table" in bad.message
        assert "'wh'" in bad.message
    with fakesnow.patch(create_database_on_connect=False, create_schema_on_connect=False):
        # Snowflake refuses the login for a database that is not there (the source asks for
        # validate_default_parameters); fakesnow opens the session with no current database,
        # so here it shows on the table that needs it, as Snowflake's 090105.
        missing = source(database="NODB").check(["contacts"])
        assert not missing.ok
        assert "table contacts: no such database 'NODB', or the role cannot use it" \
            in missing.message, missing.message


# ----------------------------------------------------------- over HTTP


def test_stream_bounded_batches_values_and_types(sf_port, database):
    seed_users(sf_port, database, 150_000)
    src = source(sf_port, database=database)
    last_sync_time = 1_700_000_000  # the lead renders {{last_sync_time}} to an epoch
    sql = (f'SELECT id, "userId", email, score, TO_TIMESTAMP(signed_up) AS signed_up, '
           f"updated_at FROM users WHERE updated_at > TO_TIMESTAMP({last_sync_time}) "
           "AND updated_at > CURRENT_TIMESTAMP - INTERVAL '24 hours' ORDER BY id")
    with src.stream(sql) as reader:
        sizes, ids, first = [], [], None
        for batch in reader:
            sizes.append(batch.num_rows)
            ids.extend(batch.column("ID").to_pylist())
            first = first or batch.slice(0, 1).to_pylist()[0]
        schema = reader.schema
    assert sum(sizes) == 150_000 and len(sizes) > 1 and max(sizes) <= BATCH_ROWS
    assert ids == list(range(150_000))
    assert schema.names == ["ID", "userId", "EMAIL", "SCORE", "SIGNED_UP", "UPDATED_AT"]
    assert schema.field("ID").type == pa.int64()
    assert schema.field("SCORE").type == pa.decimal128(10, 2)
    assert pa.types.is_timestamp(schema.field("SIGNED_UP").type)
    assert schema.field("UPDATED_AT").type.tz is None  # TIMESTAMP_NTZ
    assert first["userId"] == "u0" and first["EMAIL"] == "u0@example.com"
    assert str(first["SCORE"]) == "1.25"
    assert first["SIGNED_UP"].isoformat() == "2023-11-14T22:13:20"


def test_empty_result_keeps_schema_and_preview_gives_ten(sf_port, database):
    seed_users(sf_port, database, 50)
    src = source(sf_port, database=database)
    with src.stream('SELECT id, "userId", score, updated_at FROM users WHERE 1 = 0') as reader:
        assert list(reader) == []
        schema = reader.schema
    assert schema.names == ["ID", "userId", "SCORE", "UPDATED_AT"]
    assert [f.type for f in schema] == [pa.int64(), pa.string(), pa.decimal128(10, 2),
                                        pa.timestamp("ns")]
    rows = preview(src, 'SELECT "userId", email FROM users ORDER BY id')
    assert rows.num_rows == 10 and rows.column_names == ["userId", "EMAIL"]


def test_check_ok_bad_table_and_query_error(sf_port, database):
    seed_users(sf_port, database, 3)
    src = source(sf_port, database=database)
    ok = src.check(["users"])
    assert ok.ok and "connected; can read users" in ok.message
    bad = src.check(["users", "orders"])
    assert not bad.ok and "table orders: no such table" in bad.message
    with pytest.raises(SourceError, match=r"source 'wh': query failed: 002003 \(42S02\)"):
        with src.stream("SELECT * FROM orders"):
            pass


def test_bad_credentials_are_said_plainly_and_never_shown(sf_port, database, monkeypatch,
                                                          caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SF_PASSWORD", WRONG)
    src = source(sf_port, database=database, password={"env": "SF_PASSWORD"})
    result = src.check(["users"])
    assert not result.ok
    assert "refused the credentials of user 'retl'" in result.message, result.message
    with pytest.raises(SourceError) as raised:
        with src.stream("SELECT 1"):
            pass
    shown = [result.message, str(raised.value), raised.value.description, repr(raised.value),
             repr(src), repr(src._login), str(vars(src)), caplog.text]
    assert not [s for s in shown if WRONG in s]

    monkeypatch.setenv("SF_PASSWORD", PASSWORD)  # right password, failing query: still hidden
    src = source(sf_port, database=database, password={"env": "SF_PASSWORD"})
    with pytest.raises(SourceError) as raised:
        with src.stream("SELECT * FROM missing_table"):
            pass
    assert PASSWORD not in str(raised.value) and PASSWORD not in repr(src)
    assert PASSWORD not in caplog.text


def pem(key, passphrase: str | None = None) -> str:
    crypt = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
             else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             crypt).decode()


def test_key_pair_auth_from_env_and_from_a_file(sf_port, database, monkeypatch, tmp_path):
    seed_users(sf_port, database, 3)
    monkeypatch.setenv("SF_KEY", pem(KEY))
    by_env = source(sf_port, database=database, password=None, private_key={"env": "SF_KEY"})
    assert by_env.check(["users"]).ok

    (tmp_path / "rsa_key.p8").write_text(pem(KEY, "open-sesame-77"))
    monkeypatch.setenv("SF_KEY_PASS", "open-sesame-77")
    cfg = config(sf_port, database=database, password=None, private_key_path="rsa_key.p8",
                 private_key_passphrase={"env": "SF_KEY_PASS"})
    by_file = FACTS.connect("wh", cfg, tmp_path)  # the path is relative to the project file
    with by_file.stream('SELECT "userId" FROM users ORDER BY id') as reader:
        assert reader.read_all().column("userId").to_pylist() == ["u0", "u1", "u2"]

    monkeypatch.setenv("SF_KEY", pem(OTHER_KEY))  # a key the server does not know
    refused = source(sf_port, database=database, password=None,
                     private_key={"env": "SF_KEY"}).check([])
    assert not refused.ok and "refused the credentials" in refused.message, refused.message
    assert "PRIVATE KEY" not in refused.message

    monkeypatch.setenv("SF_KEY_PASS", "not-the-passphrase")
    wrong = FACTS.connect("wh", cfg, tmp_path).check([])
    assert not wrong.ok and "private key could not be read" in wrong.message, wrong.message
    assert "not-the-passphrase" not in wrong.message


def test_unreachable_host_says_cannot_reach():
    started = time.monotonic()
    result = source(free_port(), login_timeout=3).check(["users"])  # nothing listens there
    assert not result.ok
    assert "cannot reach Snowflake at http://127.0.0.1:" in result.message, result.message
    assert time.monotonic() - started < 30


def test_missing_env_secret_names_the_field(monkeypatch):
    from retl_assets.errors import ProjectError

    monkeypatch.delenv("SF_NOT_SET", raising=False)
    with pytest.raises(ProjectError, match=r"sources\.wh\.password: .*SF_NOT_SET"):
        source(1, password={"env": "SF_NOT_SET"})


# ------------------------------------------------------------- end to end

PROJECT = """
sources:
  warehouse:
    type: snowflake
    account: retltest
    user: retl
    password: {{env: SF_PASSWORD}}
    database: {database}
    schema: PUBLIC
    host: 127.0.0.1
    port: {port}
    protocol: http
    network_timeout: 20
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {url}
models:
  people:
    source: warehouse
    primary_key: userId
    sql: |
      SELECT "userId", email, plan, updated_at FROM people
      WHERE updated_at > CURRENT_TIMESTAMP - INTERVAL '24 hours'
syncs:
  people_identify:
    model: people
    destination: cio
    action: identify
"""


def test_snowflake_source_syncs_changes(workspace, emulator, sf_port, database, monkeypatch):
    monkeypatch.setenv("SF_PASSWORD", PASSWORD)
    run(sf_port, database,
        'CREATE TABLE people ("userId" VARCHAR, email VARCHAR, plan VARCHAR, '
        "updated_at TIMESTAMP_NTZ)",
        "INSERT INTO people SELECT 'p' || seq4(), 'p' || seq4() || '@example.com', 'free', "
        "CURRENT_TIMESTAMP::TIMESTAMP_NTZ - INTERVAL '1 hour' FROM TABLE(GENERATOR(ROWCOUNT => 200))",
        "INSERT INTO people VALUES ('old', 'old@example.com', 'free', '2020-01-01')")
    workspace.write(PROJECT.format(url=emulator.url, port=sf_port, database=database))
    first = workspace.sync("people")
    assert first.status == "success", first.errors
    assert first.added == 200  # 'old' is older than 24 hours
    profile = emulator.state()["profiles"]["p7"]
    assert profile["EMAIL"] == "p7@example.com" and profile["PLAN"] == "free"

    run(sf_port, database, "UPDATE people SET plan = 'pro' WHERE \"userId\" = 'p7'",
        "DELETE FROM people WHERE \"userId\" = 'p8'",
        "INSERT INTO people VALUES ('new', 'new@example.com', 'free', "
        "CURRENT_TIMESTAMP::TIMESTAMP_NTZ)")
    second = workspace.sync("people")
    assert second.status == "success", second.errors
    assert (second.added, second.updated, second.deleted) == (1, 1, 1)
    assert second.syncs["people_identify"]["sent"] == 2
    assert emulator.state()["profiles"]["p7"]["PLAN"] == "pro"


@contextlib.contextmanager
def snowflake_warehouse(tmp: Path, rows: int):
    """A fakesnow server (behind the guarded login) holding `people (id, email, score)` in a
    database of its own: (the source entry's fields, the model's SQL, a change of one row).
    For the cross-warehouse suites (test_every_warehouse, test_in_warehouse)."""
    import os

    os.environ.setdefault("WH_SECRET", PASSWORD)
    database = f"DB_{uuid.uuid4().hex[:10]}".upper()
    with serve(guarded_app(), free_port()) as port:
        run(port, database, "CREATE TABLE people (id NUMBER(38,0), email VARCHAR, "
                            "score NUMBER(38,0))",
            f"INSERT INTO people SELECT seq4() + 1, 'p' || (seq4() + 1) || '@example.com', "
            f"(seq4() + 1) * 2 FROM TABLE(GENERATOR(ROWCOUNT => {rows}))")
        fields = (f"    account: retltest\n    user: retl\n    password: {{env: SF_WH_PASSWORD}}\n"
                  f"    database: {database}\n    schema: PUBLIC\n    host: 127.0.0.1\n"
                  f"    port: {port}\n    protocol: http\n    network_timeout: 20")
        os.environ["SF_WH_PASSWORD"] = PASSWORD
        try:
            yield (fields, 'SELECT id AS "id", email AS "email", score AS "score" FROM people',
                   lambda: run(port, database, "UPDATE people SET score = 999 WHERE id = 3"))
        finally:
            os.environ.pop("SF_WH_PASSWORD", None)


def fetch(port: int, database: str, sql: str) -> list[tuple]:
    """One query's rows, through the real connector (for the in-warehouse suite)."""
    con = snowflake.connector.connect(
        account="retltest", user="retl", password=PASSWORD, host="127.0.0.1", port=port,
        protocol="http", database=database, schema="PUBLIC", network_timeout=10,
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False})
    try:
        return [tuple(r) for r in con.cursor().execute(sql).fetchall()]
    finally:
        con.close()
