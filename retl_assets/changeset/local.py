"""Compare a staged snapshot with the committed one in DuckDB and commit the changeset.

A hash join on the key compares fingerprints; only the changed rows are written, in full.
The commit point is the model's head.json: everything before it can be redone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from retl_assets.errors import MassDeleteError
from retl_assets.snapshot.extract import FINGERPRINT, Staged, fingerprint_sql
from retl_assets.state.engine import connect, quote
from retl_assets.state.files import remove, sql_path, temp_path, write_json
from retl_assets.state.store import FP, OP, SEQ, Head, StateStore


@dataclass(frozen=True)
class Changeset:
    model: str
    seq: int
    added: int
    updated: int
    deleted: int
    unchanged: int
    rows: int  # rows in the new snapshot
    base_version: int
    version: int
    path: Path

    @property
    def counts(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "deleted": self.deleted,
                "unchanged": self.unchanged}


@dataclass(frozen=True)
class DiffOptions:
    keep_columns: list[str] | None  # columns the committed snapshot keeps (None: all)
    max_delete_fraction: float = 0.5
    allow_mass_delete: bool = False
    incremental: bool = False


def diff_and_commit(store: StateStore, model: str, keys: list[str], staged: Staged,
                    run_id: str, run_started_at: float, options: DiffOptions,
                    partition: str | None = None) -> Changeset:
    head = store.head(model)
    mdir = store.model_dir(model)
    base = mdir / head.snapshot if head.snapshot else None
    guard_empty(model, head.rows, staged.rows, options)
    seq, version = head.log_seq + 1, head.version + 1
    staged_path = staged.path  # moved into the snapshots on commit, else removed
    log = store.log_path(model, seq)
    tmp_log = temp_path(log)
    con = connect(store.root / "tmp")
    new = f"read_parquet({sql_path(staged.path)})"
    try:
        if refingerprint_needed(head):
            base = refingerprint(con, mdir / head.full, keys, options, base)
        counts = write_changes(con, model, keys, new, staged.rows,
                               f"read_parquet({sql_path(base)})" if base else None, head.rows,
                               seq, tmp_log, options)
        added, updated, deleted = (counts.get(k, 0) for k in ("added", "updated", "deleted"))
        snap, full, rows = _write_snapshot(con, store, model, version, staged, base, keys, options)
    except BaseException:
        remove(tmp_log)
        raise
    finally:
        con.close()
    tmp_log.replace(log)
    write_json(log.with_suffix(".json"), {
        "seq": seq, "base_version": head.version, "version": version, "run_id": run_id,
        "partition": partition, "created_at": time.time(), "added": added,
        "updated": updated, "deleted": deleted, "initial": base is None,
    })
    previous = [mdir / p for p in (head.snapshot, head.full) if p]
    # The commit point: from here on the new snapshot is the base.
    store.write_head(model, Head(
        version=version, snapshot=snap, full=full, log_seq=seq, rows=rows, run_id=run_id,
        run_started_at=run_started_at, columns=[n for n, _ in staged.columns],
        fingerprint=FINGERPRINT,
    ))
    remove(*[p for p in previous if p not in (mdir / snap, mdir / full)])
    remove(staged_path)
    return Changeset(model, seq, added, updated, deleted, staged.rows - added - updated, rows,
                     head.version, version, log)


def write_changes(con, model: str, keys: list[str], new: str, new_rows: int, base: str | None,
                  base_rows: int, seq: int, out: Path, options: DiffOptions) -> dict[str, int]:
    """The changeset of `new` against `base` (SQL relations; no base: the model's first)
    written to `out` as log entry `seq`, after the mass-delete guard; returns its counts.
    Nothing of the state store is touched: a dry run diffs with it too."""
    if base is None:
        # The first changeset is the whole snapshot: rather than copy every row, the log
        # records that; a sync with no cursor reads the snapshot itself (ledger.build_work).
        con.execute(f"COPY (SELECT 'added' AS {OP}, {seq}::BIGINT AS {SEQ}, * FROM {new} "
                    f"LIMIT 0) TO {sql_path(out)} (FORMAT parquet)")
        return {"added": new_rows}
    counts = _changed_keys(con, new, base, keys, options.incremental)
    guard_deletes(model, base_rows, counts.get("deleted", 0), options)
    _write_changes(con, new, base, keys, seq, out)
    return counts


def refingerprint_needed(head: Head) -> bool:
    return bool(head.snapshot) and head.fingerprint != FINGERPRINT and bool(head.full)


def refingerprint(con, full: Path, keys: list[str], options: DiffOptions, out: Path) -> Path:
    """The base fingerprinted again with this DuckDB's hash(), from the kept full copy, so an
    upgrade of DuckDB does not make every row look updated; written to `out` (the base
    itself on a commit, a temporary file on a dry run)."""
    cols = [r[0] for r in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet({sql_path(full)})").fetchall() if r[0] != FP]
    keep = cols if options.keep_columns is None or options.incremental else [
        c for c in cols if c in keys or c in options.keep_columns]
    tmp = temp_path(out)
    select = ", ".join([quote(c) for c in keep] + [f"{fingerprint_sql(cols)} AS {FP}"])
    con.execute(f"COPY (SELECT {select} FROM read_parquet({sql_path(full)})) "
                f"TO {sql_path(tmp)} (FORMAT parquet)")
    tmp.replace(out)
    return out


def guard_empty(model: str, base_rows: int, rows: int, options: DiffOptions) -> None:
    emptied = not options.incremental and base_rows > 0 and rows == 0
    if emptied and not options.allow_mass_delete:
        raise MassDeleteError(
            f"model {model!r} returned no rows, but the last snapshot had {base_rows}; "
            "refusing to delete everything in the destinations. Nothing was committed. "
            "If this is intended, run again allowing it (retl sync --allow-mass-delete)."
        )


def guard_deletes(model: str, base_rows: int, deleted: int, options: DiffOptions) -> None:
    if options.allow_mass_delete or not base_rows:
        return
    if deleted > options.max_delete_fraction * base_rows:
        raise MassDeleteError(
            f"model {model!r} would delete {deleted} of {base_rows} rows "
            f"({deleted / base_rows:.0%}), more than max_delete_fraction "
            f"{options.max_delete_fraction:.0%}; nothing was committed. If this is intended, "
            "run again allowing it (retl sync --allow-mass-delete)."
        )


def _changed_keys(con, new: str, base: str, keys: list[str],
                  incremental: bool) -> dict[str, int]:
    """Find changed keys reading only keys and fingerprints; returns counts per operation."""
    k = [quote(c) for c in keys]
    on = " AND ".join(f"n.{c} = b.{c}" for c in k)
    pick = ", ".join(f"coalesce(n.{c}, b.{c}) AS {c}" for c in k)
    thin = ", ".join(k + [FP])
    join = "LEFT JOIN" if incremental else "FULL JOIN"  # incremental models never delete
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE changed AS
        SELECT {pick}, CASE WHEN b.{k[0]} IS NULL THEN 'added'
                            WHEN n.{k[0]} IS NULL THEN 'deleted' ELSE 'updated' END AS {OP}
        FROM (SELECT {thin} FROM {new}) n
        {join} (SELECT {thin} FROM {base}) b ON {on}
        WHERE n.{FP} IS DISTINCT FROM b.{FP}
    """)
    return dict(con.execute(f"SELECT {OP}, count(*) FROM changed GROUP BY 1").fetchall())


def _write_changes(con, new: str, base: str, keys: list[str], seq: int, out: Path) -> None:
    """The changed rows in full: new values for adds and updates, kept ones for deletes."""
    on = " AND ".join(f"x.{quote(c)} = c.{quote(c)}" for c in keys)
    con.execute(f"""
        COPY (
          SELECT c.{OP}, {seq}::BIGINT AS {SEQ}, x.* FROM {new} x JOIN changed c ON {on}
          WHERE c.{OP} <> 'deleted'
          UNION ALL BY NAME
          SELECT c.{OP}, {seq}::BIGINT AS {SEQ}, x.* FROM {base} x
          JOIN changed c ON {on} WHERE c.{OP} = 'deleted'
        ) TO {sql_path(out)} (FORMAT parquet, COMPRESSION zstd)
    """)


def merged_sql(new: str, base: str | None, keys: list[str]) -> str:
    """An incremental model's snapshot: its new rows merged over the previous snapshot."""
    if base is None:
        return f"SELECT * FROM {new}"
    on = " AND ".join(f"b.{quote(k)} = n.{quote(k)}" for k in keys)
    return f"SELECT b.* FROM {base} b ANTI JOIN {new} n ON {on} UNION ALL BY NAME SELECT * FROM {new}"


def _write_snapshot(con, store: StateStore, model: str, version: int, staged: Staged,
                    base: Path | None, keys: list[str],
                    options: DiffOptions) -> tuple[str, str, int]:
    """Write the new committed snapshot; returns (snapshot name, full name, rows)."""
    snapdir = store.model_dir(model) / "snapshots"
    snapdir.mkdir(parents=True, exist_ok=True)
    new = f"read_parquet({sql_path(staged.path)})"
    full = snapdir / f"v{version:09d}.full.parquet"
    if options.incremental:
        # The new rows merged over the previous snapshot; it keeps every column.
        select = merged_sql(new, f"read_parquet({sql_path(base)})" if base else None, keys)
        tmp = temp_path(full)
        con.execute(f"COPY ({select}) TO {sql_path(tmp)} (FORMAT parquet, COMPRESSION zstd)")
        rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(tmp)})").fetchone()[0]
        tmp.replace(full)
        return f"snapshots/{full.name}", f"snapshots/{full.name}", rows
    names = [n for n, _ in staged.columns]
    keep = names if options.keep_columns is None else [
        c for c in names if c in keys or c in options.keep_columns]
    thin = snapdir / f"v{version:09d}.parquet"
    tmp = temp_path(thin)
    cols = ", ".join([quote(c) for c in keep] + [FP])
    con.execute(f"COPY (SELECT {cols} FROM {new}) TO {sql_path(tmp)} "
                f"(FORMAT parquet, COMPRESSION zstd)")
    tmp.replace(thin)
    # The full extract serves full resyncs and new syncs until the next commit.
    staged.path.replace(full)
    return f"snapshots/{thin.name}", f"snapshots/{full.name}", staged.rows
