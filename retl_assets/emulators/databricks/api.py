"""The HTTP face of the Databricks SQL Statement Execution API 2.0, as databricks-sdk's
`WorkspaceClient().statement_execution` calls it.

What a client meets here, in order (common.py runs the first three):
1. faults.dead -> 503; faults.latency_ms;
2. `Authorization: Bearer <token>`: missing -> 401 UNAUTHENTICATED, a token not in `tokens`
   -> 403 PERMISSION_DENIED; then the rate limit (`rate_limit`, `throttle(n)`) -> 429
   REQUEST_LIMIT_EXCEEDED with Retry-After;
3. injected 429s and 500s;
4. the request: POST /api/2.0/sql/statements (an unknown warehouse_id -> 404
   RESOURCE_DOES_NOT_EXIST; bad parameters -> 400 INVALID_PARAMETER_VALUE), GET .../{id},
   GET .../{id}/result/chunks/{n}, POST .../{id}/cancel. Errors are Databricks' shape
   `{"error_code": "...", "message": "..."}`; a statement that fails is HTTP 200 with
   `status.state = FAILED`, `status.error {error_code, message}` and `status.sql_state`.

Results are cut into chunks (at most `chunk_rows` rows and about `chunk_bytes` bytes). With
EXTERNAL_LINKS each chunk is served as bytes (Arrow IPC stream, CSV or compact JSON) from
/_emulator/results/..., a signed loopback URL that expires after `link_ttl_s` (the API
promises <= 15 minutes) and, like cloud storage's presigned URLs, refuses a request that
carries an Authorization header. INLINE results (JSON_ARRAY only) fail past 25 MiB.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from retl_assets.emulators.common import (
    BaseEmulator,
    Faults,
    RateWindow,
    Refused,
    Reply,
    base_stats,
    emulator_app,
    seconds_header,
)
from retl_assets.emulators.databricks.engine import (
    SqlFailure,
    Warehouse,
    column_info,
    json_rows,
    now_iso,
)

DEFAULT_WAREHOUSE = "emulated"  # the warehouse id the emulator answers for unless told
INLINE_LIMIT = 25 * 1024 * 1024  # INLINE results fail past 25 MiB
EXTERNAL_LIMIT = 100 * 1024 ** 3  # EXTERNAL_LINKS results are truncated at 100 GiB
MAX_STATEMENT_BYTES = 16 * 1024 * 1024  # the maximum query text
LINK_TTL_S = 15 * 60  # external links are valid <= 15 minutes
DISPOSITIONS = ("INLINE", "EXTERNAL_LINKS")
FORMATS = ("JSON_ARRAY", "ARROW_STREAM", "CSV")
WAIT = re.compile(r"^(\d+)s$")


@dataclass
class _Chunk:
    index: int
    row_offset: int
    row_count: int
    byte_count: int | None
    payload: Any  # bytes (EXTERNAL_LINKS) or a data_array (INLINE)


@dataclass
class _Statement:
    id: str
    disposition: str
    format: str
    state: str = "PENDING"
    error: dict[str, str] | None = None
    sql_state: str | None = None
    manifest: dict[str, Any] | None = None
    chunks: list[_Chunk] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class DatabricksEmulator(BaseEmulator):
    """A SQL warehouse answering from a DuckDB file.

    database: the DuckDB file (engine.py maps `catalog.schema.table` onto it).
    tokens: the accepted personal access tokens; None or empty accepts any bearer token.
    warehouses: the warehouse ids that exist.
    allowed_tables: `catalog.schema.table` names the token may read (None: all).
    chunk_rows, chunk_bytes: how big a result chunk may get.
    execution_delay_s: how long each statement "runs" before it is answered (polling tests).
    """

    def __init__(self, database: str | Path, *, tokens: set[str] | None = None,
                 warehouses: set[str] | None = None, catalog: str = "main",
                 allowed_tables: set[str] | None = None, chunk_rows: int = 250_000,
                 chunk_bytes: int = 16 * 1024 * 1024, inline_limit: int = INLINE_LIMIT,
                 link_ttl_s: float = LINK_TTL_S, execution_delay_s: float = 0,
                 rate_limit: tuple[int, float] | None = None, faults: Faults | None = None,
                 seed: int = 0) -> None:
        super().__init__(faults, seed)
        self.warehouse = Warehouse(database, catalog, allowed_tables)
        self.tokens = set(tokens or ())
        self.warehouses = set(warehouses or {DEFAULT_WAREHOUSE})
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes
        self.inline_limit = inline_limit
        self.link_ttl_s = link_ttl_s
        self.execution_delay_s = execution_delay_s
        self._window = RateWindow(*(rate_limit or (None, 1.0)))
        self._secret = secrets.token_bytes(16)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="databricks-emu")
        self._throttle_left = 0
        self._clear()

    def _clear(self) -> None:
        self._statements: dict[str, _Statement] = {}
        self._window.clear()
        self.stats = {**base_stats(), "statements": 0, "failed": 0, "chunks": 0,
                      "downloads": 0, "refused_downloads": 0, "rate_limited": 0}

    # -- Python API for tests -----------------------------------------------------------------

    def throttle(self, requests: int) -> None:
        """Answer the next `requests` API requests 429 (Retry-After: faults.retry_after)."""
        with self._lock:
            self._throttle_left = requests

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"statements": {s.id: s.state for s in self._statements.values()},
                    "stats": self.stats_copy()}

    # -- Databricks' error shape --------------------------------------------------------------

    def _fault_body(self, status: int) -> Any:
        if status == 503:
            return _error("TEMPORARILY_UNAVAILABLE", "The service is temporarily unavailable.")
        return _error("INTERNAL_ERROR", "Internal error.")

    def _injected_429(self, faults: Faults, headers: dict[str, str]) -> Refused:
        return Refused(429, _error("REQUEST_LIMIT_EXCEEDED", "Too many requests; retry later."),
                       {**headers, "Retry-After": seconds_header(faults.retry_after)})

    def _admit(self, request: Request, faults: Faults) -> dict[str, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, _error("UNAUTHENTICATED", "Credential was not sent or was of an "
                                      "unsupported type for this API."))
        if self.tokens and token.strip() not in self.tokens:
            raise Refused(403, _error("PERMISSION_DENIED", "Invalid access token."))
        wait = self._arrive(self._window)
        with self._lock:
            throttled = self._throttle_left > 0
            if throttled:
                self._throttle_left -= 1
                self.stats["rate_limited"] += 1
        if throttled:
            wait = faults.retry_after
        if wait is not None:
            raise Refused(429, _error("REQUEST_LIMIT_EXCEEDED", "Too many requests; retry later."),
                          {"Retry-After": seconds_header(wait)})
        return {}

    # -- endpoints ----------------------------------------------------------------------------

    async def submit(self, request: Request, faults: Faults) -> Reply:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise _invalid("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _invalid("the request body must be a JSON object")
        statement = body.get("statement")
        if not isinstance(statement, str) or not statement.strip():
            raise _invalid("statement is required")
        if len(statement.encode()) > MAX_STATEMENT_BYTES:
            raise _invalid(f"statement is over the {MAX_STATEMENT_BYTES} byte limit")
        warehouse = body.get("warehouse_id")
        if not isinstance(warehouse, str) or not warehouse:
            raise _invalid("warehouse_id is required")
        if warehouse not in self.warehouses:
            raise Refused(404, _error("RESOURCE_DOES_NOT_EXIST",
                                      f"Warehouse {warehouse} does not exist."))
        disposition = body.get("disposition", "INLINE")
        fmt = body.get("format", "JSON_ARRAY")
        if disposition not in DISPOSITIONS:
            raise _invalid(f"disposition must be one of {', '.join(DISPOSITIONS)}")
        if fmt not in FORMATS:
            raise _invalid(f"format must be one of {', '.join(FORMATS)}")
        if disposition == "INLINE" and fmt != "JSON_ARRAY":
            raise _invalid(f"format {fmt} is supported only with EXTERNAL_LINKS disposition")
        wait = WAIT.match(str(body.get("wait_timeout", "10s")))
        seconds = int(wait[1]) if wait else -1
        if seconds != 0 and not 5 <= seconds <= 50:
            raise _invalid("wait_timeout must be 0s or between 5s and 50s")
        on_timeout = body.get("on_wait_timeout", "CONTINUE")
        if on_timeout not in ("CONTINUE", "CANCEL"):
            raise _invalid("on_wait_timeout must be CONTINUE or CANCEL")
        limits = {}
        for name in ("row_limit", "byte_limit"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise _invalid(f"{name} must be a positive integer")
            limits[name] = value
        for name in ("catalog", "schema"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise _invalid(f"{name} must be a string")
        if body.get("parameters"):
            raise _invalid("the emulator does not take statement parameters")

        stmt = _Statement(str(uuid.uuid4()), disposition, fmt)
        with self._lock:
            self._statements[stmt.id] = stmt
            self.stats["statements"] += 1
        self._pool.submit(self._execute, stmt, statement, body.get("catalog"),
                          body.get("schema"), limits["row_limit"], limits["byte_limit"])
        deadline = time.monotonic() + seconds
        while not stmt.done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if not stmt.done.is_set() and seconds and on_timeout == "CANCEL":
            self._cancel(stmt)
        return Reply(200, self._response(stmt, _base(request)))

    async def get(self, request: Request, faults: Faults) -> Reply:
        stmt = self._statement(request)
        return Reply(200, self._response(stmt, _base(request)))

    async def chunk(self, request: Request, faults: Faults) -> Reply:
        stmt = self._statement(request)
        if stmt.state != "SUCCEEDED":
            raise Refused(400, _error("BAD_REQUEST", f"Statement {stmt.id} is {stmt.state}; "
                                      "its result cannot be fetched."))
        index = int(request.path_params["index"])
        if not 0 <= index < len(stmt.chunks):
            raise _invalid(f"chunk_index {index} is out of range (the result has "
                           f"{len(stmt.chunks)} chunks)")
        with self._lock:
            self.stats["chunks"] += 1
        return Reply(200, self._chunk_body(stmt, index, _base(request)))

    async def cancel(self, request: Request, faults: Faults) -> Reply:
        self._cancel(self._statement(request))
        return Reply(200, {})

    async def download(self, request: Request) -> Response:
        """An external link: cloud storage, not the API (no token, no API faults)."""
        sid, index = request.path_params["sid"], int(request.path_params["index"])
        expires = request.query_params.get("expires", "")
        signature = request.query_params.get("sig", "")
        refused = None
        if "authorization" in request.headers:
            refused = (400, ("Only one auth mechanism allowed: the link is presigned, send "
                             "no Authorization header."))
        elif not hmac.compare_digest(signature, self._sign(sid, index, expires)):
            refused = (403, "Signature does not match.")
        elif not expires.isdigit() or int(expires) < time.time():
            refused = (403, "Request has expired.")
        with self._lock:
            stmt = self._statements.get(sid)
            key = "refused_downloads" if refused else "downloads"
            self.stats[key] += 1
        if refused:
            return Response(refused[1], status_code=refused[0], media_type="text/plain")
        if stmt is None or not 0 <= index < len(stmt.chunks):
            return Response("No such key.", status_code=404, media_type="text/plain")
        media = {"ARROW_STREAM": "application/vnd.apache.arrow.stream", "CSV": "text/csv",
                 "JSON_ARRAY": "application/json"}[stmt.format]
        return Response(stmt.chunks[index].payload, media_type=media)

    # -- execution ----------------------------------------------------------------------------

    def _execute(self, stmt: _Statement, statement: str, catalog: str | None,
                 schema: str | None, row_limit: int | None, byte_limit: int | None) -> None:
        try:
            if self.execution_delay_s and stmt.cancel.wait(self.execution_delay_s):
                return
            with self._lock:
                if stmt.state == "PENDING":
                    stmt.state = "RUNNING"
            table = self.warehouse.run(statement, catalog, schema)
            manifest, chunks = self._result(stmt, table, row_limit, byte_limit)
            with self._lock:
                if stmt.state != "CANCELED":
                    stmt.manifest, stmt.chunks, stmt.state = manifest, chunks, "SUCCEEDED"
        except SqlFailure as failure:
            self._fail(stmt, failure.error_code, failure.message, failure.sql_state)
        except Exception as e:  # noqa: BLE001 - the emulator's own fault, told as FAILED
            self._fail(stmt, "INTERNAL_ERROR", f"[INTERNAL_ERROR] {type(e).__name__}: {e}", "XX000")
        finally:
            stmt.done.set()

    def _fail(self, stmt: _Statement, code: str, message: str, sql_state: str | None) -> None:
        with self._lock:
            if stmt.state != "CANCELED":
                stmt.state = "FAILED"
                stmt.error = {"error_code": code, "message": message}
                stmt.sql_state = sql_state
                self.stats["failed"] += 1

    def _cancel(self, stmt: _Statement) -> None:
        with self._lock:
            if stmt.state in ("PENDING", "RUNNING"):
                stmt.state = "CANCELED"
        stmt.cancel.set()

    def _result(self, stmt: _Statement, table: pa.Table, row_limit: int | None,
                byte_limit: int | None) -> tuple[dict[str, Any], list[_Chunk]]:
        truncated = False
        if row_limit is not None and table.num_rows > row_limit:
            table, truncated = table.slice(0, row_limit), True
        size = table.nbytes
        if stmt.disposition == "INLINE" and size > self.inline_limit and byte_limit is None:
            raise SqlFailure(
                "INLINE_RESULT_TOO_LARGE", "54000",
                f"The result is {size} bytes, over the {self.inline_limit} byte limit of "
                "disposition INLINE; use disposition EXTERNAL_LINKS.")
        cap = byte_limit if byte_limit is not None else (
            EXTERNAL_LIMIT if stmt.disposition == "EXTERNAL_LINKS" else self.inline_limit)
        if size > cap and table.num_rows:
            table, truncated = table.slice(0, int(table.num_rows * cap / size)), True
            size = table.nbytes
        per_row = size / table.num_rows if table.num_rows else 1
        rows = max(1, min(self.chunk_rows, int(self.chunk_bytes / max(per_row, 1))))
        chunks = []
        for index, start in enumerate(range(0, table.num_rows, rows)):
            part = table.slice(start, rows)
            if stmt.disposition == "INLINE":
                chunks.append(_Chunk(index, start, part.num_rows, None, json_rows(part)))
            else:
                payload = _serialise(part, stmt.format, header=index == 0)
                chunks.append(_Chunk(index, start, part.num_rows, len(payload), payload))
        if not chunks and stmt.disposition == "INLINE":
            chunks.append(_Chunk(0, 0, 0, None, []))
        schema = [column_info(f, i) for i, f in enumerate(table.schema)]
        manifest: dict[str, Any] = {
            "format": stmt.format,
            "schema": {"column_count": len(schema), "columns": schema},
            "total_chunk_count": len(chunks),
            "chunks": [self._chunk_info(stmt, c) for c in chunks],
            "total_row_count": table.num_rows,
            "truncated": truncated,
        }
        if stmt.disposition == "EXTERNAL_LINKS":
            manifest["total_byte_count"] = sum(c.byte_count or 0 for c in chunks)
        return manifest, chunks

    # -- answers ------------------------------------------------------------------------------

    def _statement(self, request: Request) -> _Statement:
        sid = request.path_params["sid"]
        with self._lock:
            stmt = self._statements.get(sid)
        if stmt is None:
            raise Refused(404, _error("RESOURCE_DOES_NOT_EXIST",
                                      f"Statement {sid} does not exist."))
        return stmt

    def _response(self, stmt: _Statement, base: str) -> dict[str, Any]:
        with self._lock:
            status: dict[str, Any] = {"state": stmt.state}
            if stmt.error:
                status["error"] = dict(stmt.error)
            if stmt.sql_state:
                status["sql_state"] = stmt.sql_state
            out: dict[str, Any] = {"statement_id": stmt.id, "status": status}
            if stmt.state == "SUCCEEDED":
                out["manifest"] = stmt.manifest
                if stmt.chunks:
                    out["result"] = self._chunk_body(stmt, 0, base)
            return out

    def _chunk_info(self, stmt: _Statement, chunk: _Chunk) -> dict[str, Any]:
        info = {"chunk_index": chunk.index, "row_offset": chunk.row_offset,
                "row_count": chunk.row_count}
        if chunk.byte_count is not None:
            info["byte_count"] = chunk.byte_count
        return info

    def _chunk_body(self, stmt: _Statement, index: int, base: str) -> dict[str, Any]:
        chunk = stmt.chunks[index]
        body = self._chunk_info(stmt, chunk)
        if index + 1 < len(stmt.chunks):
            body["next_chunk_index"] = index + 1
            body["next_chunk_internal_link"] = (
                f"/api/2.0/sql/statements/{stmt.id}/result/chunks/{index + 1}")
        if stmt.disposition == "INLINE":
            if chunk.payload:
                body["data_array"] = chunk.payload
            return body
        expires = str(int(time.time() + self.link_ttl_s))
        link = {**body,
                "external_link": (f"{base}/_emulator/results/{stmt.id}/{index}"
                                  f"?expires={expires}&sig={self._sign(stmt.id, index, expires)}"),
                "expiration": now_iso(self.link_ttl_s)}
        return {"external_links": [link]}

    def _sign(self, sid: str, index: int, expires: str) -> str:
        return hmac.new(self._secret, f"{sid}/{index}/{expires}".encode(),
                        hashlib.sha256).hexdigest()


def _serialise(table: pa.Table, fmt: str, header: bool) -> bytes:
    if fmt == "ARROW_STREAM":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()
    rows = json_rows(table)
    if fmt == "JSON_ARRAY":
        return json.dumps(rows, separators=(",", ":")).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(table.column_names)
    writer.writerows([["null" if v is None else v for v in row] for row in rows])
    return out.getvalue().encode()


def _error(code: str, message: str) -> dict[str, str]:
    return {"error_code": code, "message": message}


def _invalid(message: str) -> Refused:
    return Refused(400, _error("INVALID_PARAMETER_VALUE", message))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def build_databricks_app(emulator: DatabricksEmulator):
    prefix = "/api/2.0/sql/statements"
    routes = [
        Route(prefix, emulator.endpoint(emulator.submit), methods=["POST"]),
        Route(prefix + "/", emulator.endpoint(emulator.submit), methods=["POST"]),
        Route(prefix + "/{sid}", emulator.endpoint(emulator.get), methods=["GET"]),
        Route(prefix + "/{sid}/result/chunks/{index:int}", emulator.endpoint(emulator.chunk),
              methods=["GET"]),
        Route(prefix + "/{sid}/cancel", emulator.endpoint(emulator.cancel), methods=["POST"]),
        Route("/_emulator/results/{sid}/{index:int}", emulator.download, methods=["GET"]),
    ]
    return emulator_app(emulator, routes)


def make_app(kind: str, keys: set[str] | None, faults: Faults,
             rate_limit: tuple[int, float] | None, *, database: str | Path, **options: Any):
    """The app `retl emulate databricks` serves: `keys` are the accepted tokens, `database`
    the DuckDB file it answers from; `options` are DatabricksEmulator's own."""
    return build_databricks_app(DatabricksEmulator(database, tokens=keys or None,
                                                   rate_limit=rate_limit, faults=faults,
                                                   **options))


__all__ = ["DEFAULT_WAREHOUSE", "DatabricksEmulator", "build_databricks_app", "make_app"]
