"""`diff: in_warehouse`: the model's snapshot and changeset live in a state schema of its own
warehouse, the comparison runs there, and only the changed rows leave it.

The tables, in the source's state schema (default `retl_state`), for a model M:

    M__staged_<run>       a run's extract, every column plus __retl_fp, until its diff
    M__snapshot_v<N>      snapshot version N: primary key, __retl_fp and the columns that
                          `deleted` syncs map
    M__changeset_v<N>     the keys that changed from version N-1 to N, with __retl_op
                          (added | updated | deleted)

The commit point stays the model's head.json in the local state store: it names the snapshot
table a diff compares with. Tables of a run that never committed are orphans, never read, and
dropped by the next run; a failed run leaves the committed tables as they were.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from retl_assets.changeset.local import Changeset, DiffOptions, guard_deletes
from retl_assets.errors import MassDeleteError, ModelError
from retl_assets.snapshot.extract import KeyReport, Limits, check_columns, row_limit_error
from retl_assets.sources.base import StateSession
from retl_assets.state.engine import connect
from retl_assets.state.files import remove, sql_path, temp_path, write_json
from retl_assets.state.store import FP, IN_WAREHOUSE, OP, SEQ, Head, StateStore


@dataclass(frozen=True)
class WarehouseStaged:
    table: str  # in the state schema
    rows: int
    columns: list[tuple[str, str]]  # (name, Arrow type), fingerprint excluded
    query_seconds: float
    keys: KeyReport


def stage_in_warehouse(model: str, keys: list[str], session: StateSession, sql: str,
                       run_id: str, limits: Limits = Limits()) -> WarehouseStaged:
    """Run the model's query into a state table beside its fingerprint, and check its keys
    there; nothing leaves the warehouse but counts and the column types."""
    q = _quoter(session.dialect)
    started = time.monotonic()
    with session.stream(f"SELECT * FROM (\n{sql}\n) q WHERE 1 = 0") as reader:
        schema = reader.schema
        for _ in reader:
            pass
    names = schema.names
    check_columns(model, keys, names, limits)
    name = f"{model}__staged_{run_id[:8]}"
    table = session.table(name)
    fp = session.fingerprint([q(n) for n in sorted(names)])
    session.execute(f"DROP TABLE IF EXISTS {table}")
    session.execute(f"CREATE TABLE {table} AS SELECT q.*, {fp} AS {q(FP)} FROM "
                    f"(SELECT * FROM (\n{sql}\n) r LIMIT {limits.rows + 1}) q")
    elapsed = time.monotonic() - started
    missing = [k for k in keys if k not in names]
    report = _check_keys(session, table, keys, missing)
    if report.rows > limits.rows:
        session.execute(f"DROP TABLE IF EXISTS {table}")
        raise ModelError(row_limit_error(model, limits))
    columns = [(f.name, str(f.type)) for f in schema]
    return WarehouseStaged(name, report.rows, columns, elapsed, report)


def drop_orphans(session: StateSession, model: str, keep: set[str]) -> None:
    """Tables of runs that never committed: nothing reads them."""
    for name in session.tables():
        if name.startswith(f"{model}__") and name not in keep:
            session.execute(f"DROP TABLE IF EXISTS {session.table(name)}")


def diff_in_warehouse(store: StateStore, session: StateSession, model: str, keys: list[str],
                      staged: str, rows: int, run_id: str, run_started_at: float,
                      options: DiffOptions, need_full: bool,
                      partition: str | None = None) -> Changeset:
    """Compare the staged table with the committed snapshot table in the warehouse, pull the
    changed rows into the local changeset log, and commit a new snapshot table."""
    head = store.head(model)
    need_full = need_full or not head.snapshot  # the first changeset points at the snapshot
    if options.incremental:
        raise ModelError(f"model {model!r}: `diff: in_warehouse` compares whole snapshots; an "
                         "incremental model ({{last_sync_time}}) diffs locally")
    q = _quoter(session.dialect)
    base = head.snapshot.removeprefix(IN_WAREHOUSE) if head.snapshot else None
    if rows == 0 and head.rows > 0 and not options.allow_mass_delete:
        raise MassDeleteError(
            f"model {model!r} returned no rows, but the last snapshot had {head.rows}; "
            "refusing to delete everything in the destinations. Nothing was committed. "
            "If this is intended, run again allowing it (retl sync --allow-mass-delete).")
    seq, version = head.log_seq + 1, head.version + 1
    new, snap = session.table(staged), f"{model}__snapshot_v{version}"
    with session.stream(f"SELECT * FROM {new} WHERE 1 = 0") as reader:
        names = [n for n in reader.schema.names if n != FP]
    keep = names if options.keep_columns is None else [
        c for c in names if c in keys or c in options.keep_columns]
    log = store.log_path(model, seq)
    log.parent.mkdir(parents=True, exist_ok=True)
    tmp_log = temp_path(log)
    local = connect(store.root / "tmp")
    full_path = None
    made = [snap]
    try:
        if base is None:
            counts = {"added": rows}
            _pull(local, session, f"SELECT 'added' AS {q(OP)}, x.* FROM {new} x WHERE 1 = 0",
                  seq, tmp_log)
        else:
            changes = f"{model}__changeset_v{version}"
            made.append(changes)
            counts = _changed_keys(session, q, new, session.table(base),
                                   session.table(changes), keys)
            guard_deletes(model, head.rows, counts.get("deleted", 0), options)
            _pull_changes(local, session, q, new, session.table(base), session.table(changes),
                          keys, seq, tmp_log)
        cols = ", ".join([q(c) for c in keep] + [q(FP)])
        session.execute(f"DROP TABLE IF EXISTS {session.table(snap)}")
        session.execute(f"CREATE TABLE {session.table(snap)} AS SELECT {cols} FROM {new}")
        if need_full:
            # A sync that has never sent, or a full resync, takes every row: they leave the
            # warehouse once, into the snapshot's local full copy.
            full_path = store.model_dir(model) / "snapshots" / f"v{version:09d}.full.parquet"
            full_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_full = temp_path(full_path)
            _copy_out(local, session, f"SELECT * FROM {new}", tmp_full)
            tmp_full.replace(full_path)
    except BaseException:
        remove(tmp_log, *([full_path] if full_path else []))
        for name in made:  # leave the committed tables as they were
            try:
                session.execute(f"DROP TABLE IF EXISTS {session.table(name)}")
            except Exception:  # noqa: BLE001 - an orphan is dropped by the next run anyway
                pass
        raise
    finally:
        local.close()
    tmp_log.replace(log)
    added, updated, deleted = (counts.get(k, 0) for k in ("added", "updated", "deleted"))
    write_json(log.with_suffix(".json"), {
        "seq": seq, "base_version": head.version, "version": version, "run_id": run_id,
        "partition": partition, "created_at": time.time(), "added": added,
        "updated": updated, "deleted": deleted, "initial": base is None,
        "in_warehouse": True,
    })
    mdir = store.model_dir(model)
    previous_full = mdir / head.full if head.full else None
    # The commit point: from here on the new snapshot table is the base.
    store.write_head(model, Head(
        version=version, snapshot=IN_WAREHOUSE + snap,
        full=str(full_path.relative_to(mdir)) if full_path else None, log_seq=seq,
        rows=rows, run_id=run_id, run_started_at=run_started_at, columns=names,
        fingerprint=f"in_warehouse/{session.dialect}"))
    if previous_full is not None and previous_full != full_path:
        remove(previous_full)
    drop_orphans(session, model, keep={snap, *made})
    return Changeset(model, seq, added, updated, deleted, rows - added - updated,
                     rows, head.version, version, log)


def _changed_keys(session: StateSession, q, new: str, base: str, changes: str,
                  keys: list[str]) -> dict[str, int]:
    k = [q(c) for c in keys]
    on = " AND ".join(f"n.{c} = b.{c}" for c in k)
    pick = ", ".join(f"coalesce(n.{c}, b.{c}) AS {c}" for c in k)
    thin = ", ".join(k + [q(FP)])
    session.execute(f"DROP TABLE IF EXISTS {changes}")
    session.execute(f"""
        CREATE TABLE {changes} AS
        SELECT {pick}, CASE WHEN b.{k[0]} IS NULL THEN 'added'
                            WHEN n.{k[0]} IS NULL THEN 'deleted' ELSE 'updated' END AS {q(OP)}
        FROM (SELECT {thin} FROM {new}) n
        FULL JOIN (SELECT {thin} FROM {base}) b ON {on}
        WHERE n.{q(FP)} IS DISTINCT FROM b.{q(FP)}
    """)
    return {op: int(n) for op, n in
            session.rows(f"SELECT {q(OP)}, count(*) FROM {changes} GROUP BY {q(OP)}")}


def _pull_changes(local, session: StateSession, q, new: str, base: str, changes: str,
                  keys: list[str], seq: int, out) -> None:
    """The changed rows in full: new values for adds and updates, kept ones for deletes."""
    on = " AND ".join(f"x.{q(c)} = c.{q(c)}" for c in keys)
    upserts, deletes = temp_path(out.with_suffix(".up")), temp_path(out.with_suffix(".del"))
    try:
        _copy_out(local, session, f"SELECT c.{q(OP)}, x.* FROM {new} x JOIN {changes} c "
                                  f"ON {on} WHERE c.{q(OP)} <> 'deleted'", upserts)
        _copy_out(local, session, f"SELECT c.{q(OP)}, x.* FROM {base} x JOIN {changes} c "
                                  f"ON {on} WHERE c.{q(OP)} = 'deleted'", deletes)
        local.execute(
            f"COPY (SELECT {OP}, {seq}::BIGINT AS {SEQ}, * EXCLUDE ({OP}) FROM "
            f"read_parquet({sql_path(upserts)}) UNION ALL BY NAME SELECT {OP}, "
            f"{seq}::BIGINT AS {SEQ}, * EXCLUDE ({OP}) FROM read_parquet({sql_path(deletes)})) "
            f"TO {sql_path(out)} (FORMAT parquet, COMPRESSION zstd)")
    finally:
        remove(upserts, deletes)


def _pull(local, session: StateSession, sql: str, seq: int, out) -> None:
    part = temp_path(out.with_suffix(".part"))
    try:
        _copy_out(local, session, sql, part)
        local.execute(f"COPY (SELECT {OP}, {seq}::BIGINT AS {SEQ}, * EXCLUDE ({OP}) FROM "
                      f"read_parquet({sql_path(part)})) TO {sql_path(out)} (FORMAT parquet)")
    finally:
        remove(part)


def _copy_out(local, session: StateSession, sql: str, out) -> None:
    """Stream a warehouse query's rows into a local Parquet file, batch by batch."""
    with session.stream(sql) as reader:
        local.register("rows_out", reader)
        try:
            local.execute(f"COPY (SELECT * FROM rows_out) TO {sql_path(out)} (FORMAT parquet)")
        finally:
            local.unregister("rows_out")


def _check_keys(session: StateSession, table: str, keys: list[str],
                missing: list[str]) -> KeyReport:
    q = _quoter(session.dialect)
    if missing:
        rows = session.rows(f"SELECT count(*) FROM {table}")[0][0]
        return KeyReport(int(rows), 0, 0, [], missing)
    cols = ", ".join(q(k) for k in keys)
    nulls = " OR ".join(f"{q(k)} IS NULL" for k in keys)
    rows, null_keys = session.rows(
        f"SELECT count(*), sum(CASE WHEN {nulls} THEN 1 ELSE 0 END) FROM {table}")[0]
    dup_total = int(session.rows(
        f"SELECT count(*) FROM (SELECT {cols} FROM {table} WHERE NOT ({nulls}) "
        f"GROUP BY {cols} HAVING count(*) > 1) d")[0][0])
    sample = []
    if dup_total:
        sample = [", ".join(str(v) for v in r[:-1]) for r in session.rows(
            f"SELECT {cols}, count(*) AS n FROM {table} WHERE NOT ({nulls}) GROUP BY {cols} "
            f"HAVING count(*) > 1 ORDER BY n DESC LIMIT 5")]
    return KeyReport(int(rows), int(null_keys or 0), dup_total, sample, [])


def _quoter(dialect: str) -> Callable[[str], str]:
    return lambda name: exp.to_identifier(name, quoted=True).sql(dialect=dialect)
