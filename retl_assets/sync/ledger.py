"""A sync's work: the changes after its cursor plus the rows it still owes, newest per key.

Collapsing a key's changes keeps what the destination must learn: added then updated is
an add (with the newest values); added then deleted is nothing; deleted then added is an
update. The idempotency key is fixed the first time a change is owed and kept after.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from retl_assets.errors import ModelError
from retl_assets.state.engine import quote
from retl_assets.state.files import read_json, remove, sql_path, temp_path
from retl_assets.state.store import (
    ATTEMPTS,
    DEST_ID,
    ERROR,
    FP,
    KEYTEXT,
    MSGID,
    OP,
    PREFIX,
    SEQ,
    Head,
    StateStore,
    SyncState,
)


def key_text_sql(keys: list[str]) -> str:
    return "concat_ws('|', " + ", ".join(f"CAST({quote(k)} AS VARCHAR)" for k in keys) + ")"


@dataclass(frozen=True)
class Pending:
    """A changeset not committed (a dry run's): the log entry the model's next diff would
    append, and the full copy of the rows its snapshot would then keep."""

    seq: int
    log: Path  # its rows, shaped like a committed log file
    full: Path  # every column of every row, shaped like the snapshot's full copy
    initial: bool  # the model's first changeset (it points at the snapshot, holds no rows)


def build_work(con: duckdb.DuckDBPyConnection, store: StateStore, sync: str, model: str,
               keys: list[str], selects: tuple[str, ...], head: Head, state: SyncState,
               full_resync: bool, pending: Pending | None = None,
               out_dir: Path | None = None) -> tuple[Path, int]:
    """Write the sync's work set to a Parquet file, each row with the destination's id of
    its record where retl knows it; returns the file and its row count.
    `pending`: a changeset as if committed after the head (nothing of the store changes);
    `out_dir`: where the file goes (default: the sync's folder)."""
    mdir = store.model_dir(model)
    ledger = store.ledger_path(sync, state)
    on = ", ".join(quote(k) for k in keys)
    parts: list[str] = []
    full = (full_resync or store.needs_full(model, state)
            or (pending is not None and pending.initial))
    # A sync that never consumed the initial changeset (which points at the snapshot rather
    # than holding rows) takes the snapshot whole.
    full = full or any(store.log_manifest(model, s).get("initial")
                       for s in range((state.cursor or 0) + 1, head.log_seq + 1))
    newest = pending.full if pending else (mdir / head.full if head.full else None)
    last_seq = pending.seq if pending else head.log_seq
    if full and newest is None:
        # `diff: in_warehouse` brings every row out only when a diff sees a sync needs them.
        raise ModelError(
            f"sync {sync!r} must send every row of model {model!r}, whose snapshot is kept in "
            f"the warehouse; run the model's job (diffs/{model} with it) to bring them out. "
            "Nothing was sent")
    if full:
        src = f"read_parquet({sql_path(newest)})"
        seq = state.pending_full if state.pending_full is not None else last_seq
        parts.append(f"SELECT 'added' AS {OP}, {seq}::BIGINT AS {SEQ}, * FROM {src}")
        if ledger:
            # A full resync sends every current row; of the owed rows only deletes remain.
            match = " AND ".join(f"l.{quote(k)} = s.{quote(k)}" for k in keys)
            parts.append(f"SELECT l.* FROM read_parquet({sql_path(ledger)}) l "
                         f"ANTI JOIN {src} s ON {match} WHERE l.{OP} = 'deleted'")
    else:
        logs = [store.log_path(model, s) for s in range((state.cursor or 0) + 1, head.log_seq + 1)]
        logs += [pending.log] if pending else []
        parts += [f"SELECT * FROM read_parquet({sql_path(p)})" for p in logs if p.exists()]
        if ledger:
            parts.append(f"SELECT * FROM read_parquet({sql_path(ledger)})")
    path = (out_dir or store.sync_dir(sync)) / f"work-{uuid.uuid4().hex}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        # Nothing new and nothing owed. The empty work set still takes the schema of a real
        # one (the snapshot's columns plus retl's own) from the same query below, so every
        # step after it, payload planning included, runs unchanged on zero rows.
        shape = (f"SELECT 'added' AS {OP}, {last_seq}::BIGINT AS {SEQ}, * "
                 f"FROM read_parquet({sql_path(newest)}) LIMIT 0") if newest else (
            # In-warehouse snapshots have no local copy; the newest changeset has the shape.
            f"SELECT * FROM read_parquet({sql_path(store.log_path(model, head.log_seq))}) "
            "LIMIT 0")
        parts.append(shape)
    everything = "\nUNION ALL BY NAME\n".join(parts)
    if not ledger:  # give the union the ledger's columns even on the first run
        everything = (f"SELECT *, NULL::VARCHAR AS {MSGID}, NULL::VARCHAR AS {ERROR}, "
                      f"0::INTEGER AS {ATTEMPTS} FROM ({everything})")
    wanted = ", ".join(f"'{op}'" for op in selects)
    ids = store.ids_path(sync, state)
    with_ids = (f"SELECT c.*, i.{DEST_ID} FROM collapsed c LEFT JOIN read_parquet("
                f"{sql_path(ids)}) i ON c.{KEYTEXT} = i.{KEYTEXT}" if ids else
                f"SELECT *, NULL::VARCHAR AS {DEST_ID} FROM collapsed")
    seed = f"'{sync}' || chr(31) || {key_text_sql(keys)} || chr(31) || {FP} || chr(31) || {SEQ}"
    if state.epoch:
        seed += f" || chr(31) || '{state.epoch}'"
    con.execute(f"""
        COPY (
          WITH everything AS ({everything}),
          ranked AS (
            SELECT *,
              row_number() OVER (PARTITION BY {on} ORDER BY {SEQ} DESC) AS __retl_rn,
              first_value({OP}) OVER (PARTITION BY {on} ORDER BY {SEQ}
                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS __retl_first
            FROM everything
          ),
          collapsed AS (
            SELECT * EXCLUDE (__retl_rn, __retl_first) REPLACE (
              CASE WHEN {OP} = 'deleted' THEN
                     CASE WHEN __retl_first = 'added' THEN NULL ELSE 'deleted' END
                   WHEN __retl_first = 'added' THEN 'added'
                   WHEN __retl_first = 'deleted' THEN 'updated'
                   ELSE {OP} END AS {OP},
              coalesce({MSGID}, md5({seed})) AS {MSGID}
            ), {key_text_sql(keys)} AS {KEYTEXT}
            FROM ranked WHERE __retl_rn = 1
          )
          SELECT * FROM ({with_ids}) WHERE {OP} IN ({wanted})
        ) TO {sql_path(path)} (FORMAT parquet)
    """)
    rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(path)})").fetchone()[0]
    return path, rows


def delivered_before(store: StateStore, sync: str) -> dict[str, str | None]:
    """What an interrupted run of this sync already delivered: idempotency key -> the
    vendor's id for it (None when the vendor gives none)."""
    done: dict[str, str | None] = {}
    path = store.checkpoint_path(sync)
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            pairs = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short by a crash: what follows was never written
        done.update((msgid, dest_id) for msgid, dest_id in pairs)
    return done


class Checkpoint:
    """The delivered batches of a run, appended as they are answered.

    Each batch is flushed to the OS at once, so a killed process loses none; the file is
    fsynced at most every `sync_every_s` (and at close), so a machine that loses power
    resends at most that much, and a fast vendor is not held to one disk sync per request."""

    def __init__(self, store: StateStore, sync: str, sync_every_s: float = 0.5):
        self._file = open(store.checkpoint_path(sync), "a")  # noqa: SIM115 (closed by close())
        self._every = sync_every_s
        self._synced = time.monotonic()

    def add(self, delivered: list[tuple[str, str | None]]) -> None:
        """Record a delivered batch (idempotency key, vendor id) before anything else happens."""
        self._file.write(json.dumps(delivered) + "\n")
        self._file.flush()
        if time.monotonic() - self._synced >= self._every:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def commit(con: duckdb.DuckDBPyConnection, store: StateStore, sync: str, work: Path,
           failures: dict[str, str], head: Head, state: SyncState, epoch: int,
           new_ids: dict[str, str] | None = None, gone: set[str] | None = None) -> int:
    """Keep the failed rows as the new ledger, update the key -> destination id map with
    what the vendor answered (and drop deleted records), and move the cursor.
    Returns the rows still owed."""
    import pyarrow as pa

    old = store.ledger_path(sync, state)
    name = None
    owed = 0
    if failures:
        table = pa.table({"m": list(failures), "e": list(failures.values())})
        con.register("failures", table)
        final = store.sync_dir(sync) / f"ledger-{uuid.uuid4().hex}.parquet"
        tmp = temp_path(final)
        con.execute(f"""
            COPY (SELECT w.* EXCLUDE ({KEYTEXT}, {DEST_ID}) REPLACE (
                    f.e AS {ERROR}, coalesce(w.{ATTEMPTS}, 0) + 1 AS {ATTEMPTS})
                  FROM read_parquet({sql_path(work)}) w JOIN failures f ON w.{MSGID} = f.m)
            TO {sql_path(tmp)} (FORMAT parquet)
        """)
        con.unregister("failures")
        tmp.replace(final)
        name = final.name
        owed = len(failures)
    old_ids = store.ids_path(sync, state)
    ids_name = _commit_ids(con, store, sync, old_ids, new_ids or {}, gone or set())
    store.write_sync_state(sync, SyncState(cursor=head.log_seq, ledger=name, epoch=epoch,
                                           owed=owed, ids=ids_name))
    remove(store.checkpoint_path(sync), work)
    for previous, current in ((old, name), (old_ids, ids_name)):
        if previous is not None and previous.name != current:
            remove(previous)
    return owed


def _commit_ids(con: duckdb.DuckDBPyConnection, store: StateStore, sync: str,
                old: Path | None, new_ids: dict[str, str], gone: set[str]) -> str | None:
    """A new id map: the old one, minus deleted records, updated with the vendor's answers."""
    import pyarrow as pa

    if not new_ids and not gone:
        return old.name if old else None
    con.register("new_ids", pa.table({KEYTEXT: list(new_ids), DEST_ID: list(new_ids.values())}))
    con.register("gone", pa.table({KEYTEXT: list(gone)}, schema=pa.schema([(KEYTEXT, pa.string())])))
    keep = (f"SELECT * FROM read_parquet({sql_path(old)}) WHERE {KEYTEXT} NOT IN "
            f"(SELECT {KEYTEXT} FROM new_ids UNION ALL SELECT {KEYTEXT} FROM gone)"
            if old else "SELECT * FROM new_ids LIMIT 0")
    final = store.sync_dir(sync) / f"ids-{uuid.uuid4().hex}.parquet"
    tmp = temp_path(final)
    con.execute(f"COPY (SELECT * FROM ({keep}) UNION ALL SELECT * FROM new_ids) "
                f"TO {sql_path(tmp)} (FORMAT parquet)")
    con.unregister("new_ids")
    con.unregister("gone")
    tmp.replace(final)
    return final.name


def data_columns(con: duckdb.DuckDBPyConnection, work: Path) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(work)})").fetchall()
    return {r[0]: r[1] for r in rows if not r[0].startswith(PREFIX)}


__all__ = ["Checkpoint", "Pending", "build_work", "commit", "data_columns", "delivered_before", "read_json"]
