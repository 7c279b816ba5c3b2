"""Sync logs: each run's record outcomes in a table of the model's own warehouse.

Opt-in per source (`sync_logs: {table, retention_days}`). During the run, `SyncLog.observe`
streams outcomes into a local Parquet file (a few thousand rows in memory at most); after it,
`SyncLog.load` bulk-loads the file into `<state_schema>.<table>` through the source's one
write path (`append_sync_log`), which also deletes rows older than `retention_days`.

The ledger stays the truth: a log that cannot be written is a warning and a metadata flag,
never a failed or a lost sync.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from retl_assets.errors import RetlError
from retl_assets.project import Project
from retl_assets.sources.base import SYNC_LOG

FLUSH_ROWS = 20_000  # outcomes held in memory before they go to the Parquet file
Outcome = tuple[str, str, str, "str | None"]  # key text, operation, status, error


class SyncLog:
    """The outcomes of one sync's run, collected on local disk."""

    def __init__(self, sync: str, model: str, run_id: str, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.sync, self.model, self.run_id = sync, model, run_id
        self.path = folder / f"sync_log.{sync}.{run_id}.{uuid.uuid4().hex[:8]}.parquet"
        self.rows = 0
        self._pending: list[tuple[Outcome, datetime]] = []
        self._writer: pq.ParquetWriter | None = None

    def observe(self, outcomes: list[Outcome]) -> None:
        now = datetime.now(UTC)
        self._pending.extend((o, now) for o in outcomes)
        if len(self._pending) >= FLUSH_ROWS:
            self._flush()

    def close(self) -> Path | None:
        """The finished file, or None when the run had no outcomes."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.path if self.rows else None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def _flush(self) -> None:
        if not self._pending:
            return
        n = len(self._pending)
        keys, operations, statuses, errors = (list(c) for c in zip(*(o for o, _ in self._pending)))
        batch = pa.RecordBatch.from_arrays([
            pa.array([self.sync] * n, pa.string()),
            pa.array([self.model] * n, pa.string()),
            pa.array(keys, pa.string()),
            pa.array(operations, pa.string()),
            pa.array(statuses, pa.string()),
            pa.array(errors, pa.string()),
            pa.array([self.run_id] * n, pa.string()),
            pa.array([t for _, t in self._pending], SYNC_LOG.field("logged_at").type),
        ], schema=SYNC_LOG)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, SYNC_LOG)
        self._writer.write_batch(batch)
        self.rows += n
        self._pending = []


def load(project: Project, log: SyncLog, source: Any | None = None,
         now: datetime | None = None) -> dict[str, Any]:
    """Put the run's outcomes in the model's warehouse; say what happened as metadata.
    Raises nothing: a failure is returned (`sync_log_failed`) for the caller to warn with."""
    model = project.config.models[log.model]
    config = project.config.sources[model.source]
    settings = config.sync_logs
    if settings is None:
        log.discard()
        return {}
    where = f"{config.state_schema}.{settings.table}"
    path = log.close()
    if path is None:
        return {"sync_log": f"{where}: no records this run"}
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    try:
        if source is None:
            from retl_assets.sources import open_source

            source = open_source(project, model.source)
        append = getattr(source, "append_sync_log", None)
        if append is None:
            raise RetlError(f"source {model.source!r} ({config.type}) has no table retl may "
                            "write: remove its `sync_logs`")
        rows = append(config.state_schema, settings.table, path, cutoff)
    except Exception as e:  # noqa: BLE001 - the sync's data is in the ledger; only the log is lost
        message = getattr(e, "description", None) or str(e).splitlines()[0]
        return {"sync_log_failed": (
            f"sync {log.sync!r}: the sync log {where} of source {model.source!r} was not "
            f"written ({message}); the run's {log.rows} outcomes are kept in {path}, and "
            f"every record stays accounted for in the sync's ledger")}
    path.unlink(missing_ok=True)
    return {"sync_log": f"{where}: {rows} records"}


def log_folder(project: Project) -> Path:
    """Where a run's outcomes wait for their load: the state store's scratch folder, or the
    system's temp folder when the store is not local."""
    root = project.state_dir
    return root / "tmp" if "://" not in str(root) else Path(tempfile.gettempdir()) / "retl"


def observers(context: Any, project: Project, sync: str, run_id: str) -> tuple[
        Callable[[int, int], None], Callable[[list[Outcome]], None],
        Callable[[], dict[str, Any]]]:
    """The hooks the sync asset hands to `run_sync`: `progress(done, total)` logs progress
    lines, `observe(outcomes)` collects the sync log (when the source keeps one), and
    `finish()`, called once `run_sync` returns or raises, writes the log and the last
    progress line and returns metadata for the sync's materialisation."""
    from retl_assets.progress import ProgressReporter

    config = project.config.syncs[sync]
    reporter = ProgressReporter(context.log, sync)
    keeps = project.config.sources[project.config.models[config.model].source].sync_logs
    log = SyncLog(sync, config.model, run_id, log_folder(project)) if keeps else None

    def observe(outcomes: list[Outcome]) -> None:
        if log is not None:
            log.observe(outcomes)

    def finish() -> dict[str, Any]:
        reporter.finish()
        if log is None:
            return {}
        meta = load(project, log)
        if "sync_log_failed" in meta:
            context.log.warning(meta["sync_log_failed"])
        elif "sync_log" in meta:
            context.log.info(f"sync {sync}: sync log {meta['sync_log']}")
        return meta

    return reporter, observe, finish


__all__ = ["SyncLog", "load", "log_folder", "observers"]
