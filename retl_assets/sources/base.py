"""What every source offers: check the connection, and stream a read-only query's rows as
Arrow record batches of bounded size. Preview is a stream read for its first rows only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

BATCH_ROWS = 64_000  # rows per record batch a source yields, at most (memory stays flat)


@dataclass(frozen=True)
class Check:
    """The answer of `retl test-connection` for a source, in plain words."""

    ok: bool
    message: str  # names the source; says host unreachable, bad credentials, no such
    #               database/schema, or which table lacks a grant


class Source(Protocol):
    name: str
    dialect: str  # sqlglot's name for the warehouse's SQL

    def stream(self, sql: str) -> AbstractContextManager[pa.RecordBatchReader]:
        """Run one read-only query in a read-only session (where the warehouse has one) and
        yield its rows as a reader of batches of at most BATCH_ROWS rows; closes on exit.
        Raises SourceError naming the source, with the warehouse's own first line."""
        ...

    def check(self, tables: Iterable[str]) -> Check:
        """Connect, then read zero rows of each table the models read (names as the models'
        SQL spells them), and say plainly what failed first."""
        ...


def preview(source: Source, sql: str, limit: int = 10) -> pa.Table:
    """The query's first `limit` rows and their types, never the whole result."""
    with source.stream(f"SELECT * FROM (\n{sql}\n) AS retl_preview LIMIT {int(limit)}") as reader:
        batches = []
        rows = 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows >= limit:
                break
        return pa.Table.from_batches(batches, reader.schema).slice(0, limit)


def probe_sql(table: str) -> str:
    """Zero rows of a table: proves it exists and the role may read it, reads nothing."""
    return f"SELECT * FROM {table} WHERE 1 = 0"


def rebatch(reader: pa.RecordBatchReader, rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
    """The same rows in batches of at most `rows` (drivers may hand over bigger ones)."""

    def batches():
        for batch in reader:
            for start in range(0, batch.num_rows, rows):
                yield batch.slice(start, rows)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


# SQLSTATE classes as PostgreSQL defines them; Redshift, Snowflake and Databricks use the same
# codes for these failures, so `retl test-connection` reads the code, never the message.
SQLSTATE_MEANING = {
    "08": "cannot reach the server",
    "28": "the server refused the credentials",
    "3D": "no such database",
    "3F": "no such schema",
    "42501": "the role lacks a grant to read",
    "42P01": "no such table (or the role cannot see it)",
}


def sqlstate_meaning(code: str | None) -> str | None:
    if not code:
        return None
    return SQLSTATE_MEANING.get(code) or SQLSTATE_MEANING.get(code[:2])


def refused_connection(first_line: str) -> str:
    """What a failed libpq log-on means. libpq keeps no SQLSTATE for it, so the server's own
    FATAL line is shown as it is (no such database, bad password, unknown role); a failure
    without one never reached a server."""
    if "FATAL:" in first_line:
        return "the server refused the connection: " + first_line.split("FATAL:", 1)[1].strip()
    return "cannot reach the server: " + first_line.split("failed:", 1)[-1].strip()


class CursorSession:
    """`execute`, `rows` and `stream` of a StateSession over a DB-API connection. A subclass
    says how a statement runs (`_cursor`, raising SourceError) and how a cursor's result
    becomes bounded Arrow batches (`_reader`)."""

    def _cursor(self, sql: str):
        raise NotImplementedError

    def _reader(self, cursor) -> pa.RecordBatchReader:
        raise NotImplementedError

    def execute(self, sql: str) -> None:
        self._cursor(sql).close()

    def rows(self, sql: str) -> list[tuple]:
        cur = self._cursor(sql)
        try:
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        cur = self._cursor(sql)
        try:
            yield self._reader(cur)
        finally:
            cur.close()


class StateSession(Protocol):
    """A session that writes only retl's state schema in the warehouse (`diff: in_warehouse`):
    the model's snapshot and changeset are computed there, and only changed rows leave.
    A source opens one with `state_session(schema, model)`."""

    dialect: str

    def table(self, name: str) -> str:
        """The quoted, qualified name of a state table."""
        ...

    def tables(self) -> list[str]:
        """The names of the tables in the state schema."""
        ...

    def fingerprint(self, columns: list[str]) -> str:
        """SQL of a row's fingerprint over the (quoted) columns: any change of a value, NULLs
        included, changes it, and so does its kind as a destination sees it (7 against '7')."""
        ...

    def execute(self, sql: str) -> None: ...

    def rows(self, sql: str) -> list[tuple]: ...

    def stream(self, sql: str) -> AbstractContextManager[pa.RecordBatchReader]:
        """The query's rows in bounded batches; the session stays usable after."""
        ...


# ---------------------------------------------------------------- sync logs
# The one write a source offers beside `state_session`: `append_sync_log(schema, table,
# parquet, cutoff)` bulk-loads a run's record outcomes (a local Parquet file of SYNC_LOG rows)
# into a table of retl's state schema, creating both if missing, then deletes rows logged
# before `cutoff`. It returns the rows loaded; failures raise SourceError naming the source.

SYNC_LOG = pa.schema([
    ("sync", pa.string()),
    ("model", pa.string()),
    ("record_key", pa.string()),  # the primary key as text (several columns joined)
    ("operation", pa.string()),
    ("status", pa.string()),  # delivered rejected invalid unsent unconfirmed skipped resumed
    ("error", pa.string()),
    ("run_id", pa.string()),
    ("logged_at", pa.timestamp("us", tz="UTC")),
])


def sync_log_columns(text: str, time: str) -> str:
    """The log table's column list in a dialect's words for text and a UTC timestamp."""
    return ", ".join(f'"{f.name}" {time if pa.types.is_timestamp(f.type) else text}'
                     for f in SYNC_LOG)
