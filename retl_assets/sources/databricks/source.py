"""Databricks SQL warehouses through the SQL Statement Execution API 2.0.

A query runs as one statement with `disposition=EXTERNAL_LINKS, format=ARROW_STREAM`: the
request waits up to `wait_timeout_s`, then the statement is polled until it is done. Its
result is a list of chunks, each an Arrow IPC stream behind a short-lived presigned URL; they
are fetched one at a time (the link of chunk n+1 is asked for only once chunk n is read),
so memory holds one chunk, and re-batched to at most BATCH_ROWS rows. An empty result has no
chunk: its schema comes from the manifest.

Failures are classified by what the API says as data: the HTTP error's `error_code`
(UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST, ...) and a failed statement's
`status.sql_state` (42P01 no such table, 42501 missing grant, 42704 no such catalog or
schema), never its message text. databricks-sdk 0.60's StatementStatus drops `sql_state`,
so a failed statement's status is read once more as raw JSON through the SDK's ApiClient.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import BATCH_ROWS, Check, probe_sql, rebatch, sqlstate_meaning

CREDENTIAL_CODES = {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_TOKEN", "UNAUTHORIZED"}
MISSING_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
THROTTLED_CODES = {"REQUEST_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS", "RESOURCE_EXHAUSTED"}
NO_SUCH_OBJECT = "42704"  # Databricks: no such catalog or schema (NO_SUCH_CATALOG_EXCEPTION,
#                           SCHEMA_NOT_FOUND share it)
# What a failed `SELECT 1` under the configured catalog (or catalog and schema) means, by
# SQLSTATE: 42704 above, Spark's CATALOG_NOT_FOUND (42P08), the standard's 3D000 / 3F000.
MISSING_CATALOG = {NO_SUCH_OBJECT, "42P08", "3D000"}
MISSING_SCHEMA = {NO_SUCH_OBJECT, "3F000"}
DOWNLOAD_TIMEOUT_S = 300


@dataclass
class _Failure(Exception):
    """What went wrong, as data: `kind` is config | unreachable | http | statement."""

    kind: str
    message: str
    error_code: str | None = None
    sql_state: str | None = None


class DatabricksSource:
    dialect = "databricks"

    def __init__(self, name: str, *, host: str | None, warehouse_id: str,
                 token: str | None = None, profile: str | None = None,
                 catalog: str | None = None, schema: str | None = None,
                 wait_timeout_s: int = 10, statement_timeout_s: float = 3600,
                 retry_timeout_s: int = 60) -> None:
        self.name = name
        self.host = host
        self.warehouse_id = warehouse_id
        self.catalog = catalog
        self.schema = schema
        self.wait_timeout_s = wait_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self.retry_timeout_s = retry_timeout_s
        self._token = token  # never logged, never in a message or repr
        self._profile = profile
        self._workspace = None

    def __repr__(self) -> str:
        return (f"DatabricksSource(name={self.name!r}, host={self.host!r}, "
                f"warehouse_id={self.warehouse_id!r})")

    # -- the Source protocol ------------------------------------------------------------------

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        try:
            response = self._run(sql, self.catalog, self.schema)
        except _Failure as f:
            raise SourceError(self._say(f, "query failed")) from None
        yield rebatch(self._reader(response), BATCH_ROWS)

    def version(self, tables: Iterable[str]) -> dict[str, object]:
        """Each table's Delta version (DESCRIBE HISTORY): it grows with every commit, so the
        model's `source_changed` sensor runs it only when one of them moved."""
        versions: dict[str, object] = {}
        for table in tables:
            with self.stream(f"DESCRIBE HISTORY {table} LIMIT 1") as reader:
                rows = reader.read_all().to_pylist()
            versions[table] = rows[0].get("version") if rows else None
        return versions

    def check(self, tables: Iterable[str]) -> Check:
        """Reach the warehouse, then the catalog, then the schema, then each table."""
        tables = list(tables)
        steps = [("connect", self.catalog, None)]
        if self.schema:
            steps.append(("schema", self.catalog, self.schema))
        try:
            for step, catalog, schema in steps:
                try:
                    self._run("SELECT 1", catalog, schema)
                except _Failure as f:
                    missing = MISSING_SCHEMA if step == "schema" else MISSING_CATALOG
                    if f.sql_state in missing and (step == "schema" or self.catalog):
                        what = (f"no such schema {self.schema!r}" if step == "schema"
                                else f"no such catalog {self.catalog!r}")
                        return Check(False, f"source {self.name!r}: {what} "
                                            f"({_first_line(f.message)})")
                    raise
            for table in tables:
                try:
                    self._run(probe_sql(table), self.catalog, self.schema)
                except _Failure as f:
                    if f.kind == "statement" and f.sql_state in ("42P01", "42501"):
                        meaning = sqlstate_meaning(f.sql_state)
                        return Check(False, f"source {self.name!r}: table {table}: {meaning} "
                                            f"({_first_line(f.message)})")
                    raise
        except _Failure as f:
            return Check(False, self._say(f, "cannot check"))
        where = f"{self.catalog}.{self.schema}" if self.catalog and self.schema else (
            self.catalog or self.schema or "the default catalog")
        return Check(True, f"source {self.name!r}: Databricks SQL warehouse "
                           f"{self.warehouse_id} at {self.host or 'the SDK default host'} "
                           f"answers; {len(tables)} table(s) readable in {where}")

    # -- statements ---------------------------------------------------------------------------

    def _client(self):
        """A WorkspaceClient from databricks-sdk itself, not through dagster-databricks:
        DatabricksClientResource (0.29) does hand out a WorkspaceClient, but it builds the
        SDK's Config without retry_timeout_seconds / http_timeout_seconds, and the SDK retries
        a refused connection (and each 429) for 300 s by default, so an unreachable host would
        hold `retl test-connection` for five minutes. The auth is the same SDK Config either
        way: a token (PAT) when given, else the SDK's default chain (env, config profile)."""
        if self._workspace is None:
            from databricks.sdk import WorkspaceClient
            from databricks.sdk.config import Config

            options = {"retry_timeout_seconds": self.retry_timeout_s,
                       "http_timeout_seconds": 60, "product": "retl", "product_version": "1"}
            if self.host:
                options["host"] = self.host
            if self._token:
                options["token"] = self._token
                options["auth_type"] = "pat"
            if self._profile:
                options["profile"] = self._profile
            try:
                self._workspace = WorkspaceClient(config=Config(**options))
            except ValueError as e:  # the SDK found no host or credentials
                raise _Failure("config", f"no Databricks host or credentials: "
                                         f"{_first_line(e)}") from None
        return self._workspace

    def _call(self, fn, *args, **kwargs):
        """One SDK call; its exceptions become a _Failure (classified by error_code)."""
        import requests
        from databricks.sdk.errors import DatabricksError

        try:
            return fn(*args, **kwargs)
        except DatabricksError as e:
            raise _Failure("http", str(e), e.error_code) from None
        except TimeoutError as e:  # the SDK's retries ran out
            cause = e.__cause__
            if isinstance(cause, DatabricksError):
                raise _Failure("http", f"{cause} (still refused after "
                                       f"{self.retry_timeout_s} s of retries)",
                               cause.error_code) from None
            raise _Failure("unreachable", f"{type(cause or e).__name__} for "
                                          f"{self.retry_timeout_s} s") from None
        except requests.RequestException as e:
            raise _Failure("unreachable", type(e).__name__) from None

    def _run(self, sql: str, catalog: str | None, schema: str | None):
        """Execute one statement and wait for it: the SUCCEEDED StatementResponse."""
        from databricks.sdk.service.sql import (
            Disposition,
            ExecuteStatementRequestOnWaitTimeout,
            Format,
            StatementState,
        )

        api = self._client().statement_execution
        response = self._call(
            api.execute_statement, statement=sql, warehouse_id=self.warehouse_id,
            catalog=catalog, schema=schema, disposition=Disposition.EXTERNAL_LINKS,
            format=Format.ARROW_STREAM, wait_timeout=f"{self.wait_timeout_s}s",
            on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CONTINUE)
        deadline = time.monotonic() + self.statement_timeout_s
        pause = 0.05
        while response.status.state in (StatementState.PENDING, StatementState.RUNNING):
            if time.monotonic() > deadline:
                self._call(api.cancel_execution, response.statement_id)
                raise _Failure("statement", f"statement still running after "
                                            f"{self.statement_timeout_s:g} s; canceled")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            response = self._call(api.get_statement, response.statement_id)
        if response.status.state == StatementState.SUCCEEDED:
            return response
        if response.status.state == StatementState.FAILED:
            raw = self._call(self._client().api_client.do, "GET",
                             f"/api/2.0/sql/statements/{response.statement_id}")
            status = raw.get("status") or {}
            error = status.get("error") or {}
            raise _Failure("statement", error.get("message") or "statement failed",
                           error.get("error_code"), status.get("sql_state"))
        raise _Failure("statement", f"statement {response.status.state.value.lower()}")

    # -- results ------------------------------------------------------------------------------

    def _reader(self, response) -> pa.RecordBatchReader:
        manifest = response.manifest
        if not manifest or not manifest.total_chunk_count:
            schema = arrow_schema(manifest.schema.columns if manifest and manifest.schema else [])
            return pa.RecordBatchReader.from_batches(schema, iter(()))
        links = (response.result.external_links if response.result else None) or []
        first = links[0] if links else self._link(response.statement_id, 0)
        chunk = self._download(response.statement_id, first, fresh=not links)

        def batches():
            reader, link = chunk, first
            while True:
                yield from reader
                if link.next_chunk_index is None:
                    return
                link = self._link(response.statement_id, link.next_chunk_index)
                reader = self._download(response.statement_id, link, fresh=True)

        return pa.RecordBatchReader.from_batches(chunk.schema, batches())

    def _link(self, statement_id: str, index: int):
        api = self._client().statement_execution
        try:
            data = self._call(api.get_statement_result_chunk_n, statement_id, index)
        except _Failure as f:
            raise SourceError(self._say(f, f"cannot fetch result chunk {index}")) from None
        if not data.external_links:
            raise SourceError(f"source {self.name!r}: chunk {index} of statement "
                              f"{statement_id} came without an external link")
        return data.external_links[0]

    def _download(self, statement_id: str, link, fresh: bool) -> pa.RecordBatchReader:
        """One chunk's Arrow stream. The link is presigned: it gets the link's own headers
        and never the Databricks token. A link that came with the statement and is about to
        expire, or one storage refuses (401/403), is asked for again once."""
        import requests

        for attempt in (1, 2):
            if attempt == 2 or (not fresh and _expired(link.expiration)):
                link = self._link(statement_id, link.chunk_index)
            try:
                answer = requests.get(link.external_link, headers=link.http_headers or {},
                                      timeout=DOWNLOAD_TIMEOUT_S)
            except requests.RequestException as e:
                raise SourceError(f"source {self.name!r}: cannot download result chunk "
                                  f"{link.chunk_index}: {type(e).__name__}") from None
            if answer.status_code == 200:
                try:
                    return pa.ipc.open_stream(pa.BufferReader(answer.content))
                except pa.ArrowInvalid as e:
                    raise SourceError(f"source {self.name!r}: result chunk {link.chunk_index} "
                                      f"is not an Arrow stream: {_first_line(e)}") from None
            if answer.status_code not in (401, 403) or attempt == 2:
                break
        raise SourceError(f"source {self.name!r}: result chunk {link.chunk_index}: storage "
                          f"answered {answer.status_code}")

    # -- messages -----------------------------------------------------------------------------

    def _say(self, f: _Failure, doing: str) -> str:
        where = f"source {self.name!r}"
        first = _first_line(f.message)
        if f.kind == "config":
            return f"{where}: {first}"
        if f.kind == "unreachable":
            return f"{where}: cannot reach the server at {self.host}: {first}"
        if f.kind == "http":
            code = f.error_code or ""
            if code in CREDENTIAL_CODES:
                return f"{where}: the server refused the credentials ({code}: {first})"
            if code in MISSING_CODES:
                return (f"{where}: no such SQL warehouse {self.warehouse_id!r} "
                        f"({code}: {first})")
            if code in THROTTLED_CODES:
                return f"{where}: Databricks kept rate-limiting the requests ({code}: {first})"
            return f"{where}: {doing}: {code or 'error'}: {first}"
        meaning = "no such catalog or schema" if f.sql_state == NO_SUCH_OBJECT else (
            sqlstate_meaning(f.sql_state))
        state = f" [SQLSTATE {f.sql_state}]" if f.sql_state else ""
        return f"{where}: {doing}: {first}" + (f" ({meaning}){state}" if meaning else state)


def _first_line(value: object) -> str:
    text = str(value).strip()
    first = text.splitlines()[0] if text else ""
    return first.split(". Config: ", 1)[0]  # the SDK's debug suffix on auth errors


def _expired(expiration: str | None) -> bool:
    if not expiration:
        return False
    try:
        when = datetime.fromisoformat(expiration)
    except ValueError:
        return False
    return when.timestamp() - time.time() < 5  # about to expire: ask for a fresh link


# The manifest's types as Arrow's, for a result with no chunk to read them from.
_SIMPLE = {"BOOLEAN": pa.bool_(), "BYTE": pa.int8(), "TINYINT": pa.int8(),
           "SHORT": pa.int16(), "SMALLINT": pa.int16(), "INT": pa.int32(),
           "INTEGER": pa.int32(), "LONG": pa.int64(), "BIGINT": pa.int64(),
           "FLOAT": pa.float32(), "REAL": pa.float32(), "DOUBLE": pa.float64(),
           "STRING": pa.string(), "CHAR": pa.string(), "VARCHAR": pa.string(),
           "BINARY": pa.binary(), "DATE": pa.date32(), "NULL": pa.null(), "VOID": pa.null(),
           "TIMESTAMP": pa.timestamp("us", tz="Etc/UTC"), "TIMESTAMP_NTZ": pa.timestamp("us")}


def arrow_schema(columns) -> pa.Schema:
    fields = []
    for c in sorted(columns, key=lambda c: c.position or 0):
        text = (c.type_text or (c.type_name.value if c.type_name else "STRING")).upper()
        base = text.split("(", 1)[0].split("<", 1)[0].strip()
        if base == "DECIMAL":
            t = pa.decimal128(c.type_precision or 10, c.type_scale or 0)
        else:
            t = _SIMPLE.get(base, pa.string())  # ARRAY, MAP, STRUCT, INTERVAL: their text
        fields.append(pa.field(c.name, t))
    return pa.schema(fields)


__all__ = ["DatabricksSource", "arrow_schema"]
