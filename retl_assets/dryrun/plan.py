"""What a sync's next run would do, worked out without committing anything.

The model's query runs into a temporary folder outside the state store, is diffed against
the committed snapshot there, and the sync's work set is built from the committed log, the
ledger and that uncommitted changeset, exactly as the real run would build it after its
diff. The state store is only read: no lease is taken (a dry run must never make a real run
wait or fail), so a run that commits meanwhile can remove a file the dry run was reading;
that is caught and reported as such.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from retl_assets.changeset.local import (
    DiffOptions,
    guard_empty,
    merged_sql,
    refingerprint,
    refingerprint_needed,
    write_changes,
)
from retl_assets.errors import ModelError, RetlError
from retl_assets.project import Project
from retl_assets.snapshot.extract import Limits, key_error, stage
from retl_assets.sources import Source
from retl_assets.state.engine import connect
from retl_assets.state.files import sql_path
from retl_assets.state.store import KEYTEXT, Head, StateStore, SyncState
from retl_assets.sync import ledger


@dataclass
class Planned:
    """The sync's work set as its next run would build it, in a temporary folder."""

    sync: str
    model: str
    head: Head  # the committed state the plan compares with
    state: SyncState
    con: duckdb.DuckDBPyConnection
    folder: Path  # temporary: removed when the plan's `with` block ends
    pending: ledger.Pending
    rows: int  # rows the model's query returns now
    changes: dict[str, int]  # the diff's added / updated / deleted / unchanged
    work: Path
    work_rows: int


@contextmanager
def planned(project: Project, store: StateStore, sync: str, source: Source,
            selects: tuple[str, ...], only: list[str] | None = None) -> Iterator[Planned]:
    """The next run's work set for `sync` (whose writer takes the changes `selects`).
    `only`: the values of one primary key; the query and the comparison then read only it."""
    config = project.config.syncs[sync]
    model = project.models[config.model]
    if model.config.diff == "in_warehouse":
        raise ModelError(
            f"sync {sync!r}: model {model.name!r} keeps its snapshot in the warehouse "
            "(`diff: in_warehouse`), so working out its changes means writing an extract to "
            "the warehouse's state schema, which a dry run must not change; nothing was run. "
            f"Use `retl preview {model.name}` to see its rows")
    head = store.head(model.name)
    state = store.sync_state(sync)
    folder = Path(tempfile.mkdtemp(prefix=f"retl-dryrun-{sync}-"))
    con = connect(folder / "spill")
    try:
        yield _plan(project, store, sync, source, selects, only, head, state, folder, con)
    except (FileNotFoundError, duckdb.IOException) as e:
        if store.head(model.name) != head:
            raise RetlError(
                f"sync {sync!r}: a run of model {model.name!r} committed while the dry run "
                "read its state; nothing was changed; run the dry run again") from e
        raise
    finally:
        con.close()
        shutil.rmtree(folder, ignore_errors=True)


def _plan(project: Project, store: StateStore, sync: str, source: Source,
          selects: tuple[str, ...], only: list[str] | None, head: Head, state: SyncState,
          folder: Path, con: duckdb.DuckDBPyConnection) -> Planned:
    model = project.models[project.config.syncs[sync].model]
    keys = model.keys
    last_sync_time = int(head.run_started_at or 0) if model.incremental else 0
    sql = model.render_sql(last_sync_time)
    if only is not None:
        sql = _only_sql(sql, keys, only, source.dialect)
    staged = stage(model.name, keys, source, sql, folder / "extract.parquet", folder / "spill",
                   Limits(model.config.max_rows, model.config.max_columns))
    report = staged.keys
    if report is not None and not report.ok:
        raise ModelError(key_error(model.name, keys, report, [c for c, _ in staged.columns])
                         + "; a real run would stop there too")
    options = DiffOptions(keep_columns=project.kept_columns(model.name),
                          max_delete_fraction=model.config.max_delete_fraction,
                          incremental=model.incremental)
    mdir = store.model_dir(model.name)
    base = None
    if head.snapshot:
        path = mdir / head.snapshot
        if refingerprint_needed(head):
            path = refingerprint(con, mdir / head.full, keys, options, folder / "base.parquet")
        base = _where_key(f"read_parquet({sql_path(path)})", keys, only)
    new = f"read_parquet({sql_path(staged.path)})"
    # One key read alone must not look like a mass delete of all the others.
    base_rows = head.rows if only is None else 0
    guard_empty(model.name, base_rows, staged.rows, options)
    seq = head.log_seq + 1
    log = folder / "log.parquet"
    counts = write_changes(con, model.name, keys, new, staged.rows, base, base_rows, seq, log,
                           options)
    full = staged.path
    if model.incremental and base is not None:
        full = folder / "full.parquet"  # the merged snapshot the commit would keep
        con.execute(f"COPY ({merged_sql(new, base, keys)}) TO {sql_path(full)} (FORMAT parquet)")
    pending = ledger.Pending(seq, log, full, initial=head.snapshot is None)
    work, rows = ledger.build_work(con, store, sync, model.name, keys, selects, head, state,
                                   False, pending, folder)
    changes = {k: counts.get(k, 0) for k in ("added", "updated", "deleted")}
    changes["unchanged"] = staged.rows - changes["added"] - changes["updated"]
    return Planned(sync, model.name, head, state, con, folder, pending, staged.rows, changes,
                   work, rows)


def full_work(project: Project, store: StateStore, plan: Planned,
              selects: tuple[str, ...]) -> tuple[Path, int]:
    """The work set a full resync would send now (for a row that has not changed)."""
    model = project.models[plan.model]
    return ledger.build_work(plan.con, store, plan.sync, model.name, model.keys, selects,
                             plan.head, plan.state, True, plan.pending, plan.folder)


def only_key(con: duckdb.DuckDBPyConnection, work: Path, key_text: str) -> tuple[Path, int]:
    """The work set's row(s) of one key, as a work file of their own."""
    out = work.with_name(f"only-{work.name}")
    con.execute(f"COPY (SELECT * FROM read_parquet({sql_path(work)}) WHERE {KEYTEXT} = ?) "
                f"TO {sql_path(out)} (FORMAT parquet)", [key_text])
    rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_path(out)})").fetchone()[0]
    return out, rows


def _where(keys: list[str], values: list[str], dialect: str) -> exp.Expression:
    """Each key column, as text, equal to its given value: in the source's own dialect."""
    return exp.and_(*[exp.EQ(this=exp.cast(exp.column(k, quoted=True), "text"),
                             expression=exp.Literal.string(v)) for k, v in zip(keys, values)])


def _only_sql(sql: str, keys: list[str], values: list[str], dialect: str) -> str:
    where = _where(keys, values, dialect).sql(dialect=dialect)
    return f"SELECT * FROM (\n{sql}\n) retl_only WHERE {where}"


def _where_key(relation: str, keys: list[str], values: list[str] | None) -> str:
    if values is None:
        return relation
    return f"(SELECT * FROM {relation} WHERE {_where(keys, values, 'duckdb').sql('duckdb')})"
