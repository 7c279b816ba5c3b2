"""Where the truth lives: a folder per model (snapshots, changeset log) and per sync (ledger).

    <root>/models/<M>/head.json            the committed snapshot: the one commit point
    <root>/models/<M>/snapshots/vN.parquet committed snapshot (key, fingerprint, kept columns)
    <root>/models/<M>/snapshots/vN.full.parquet  every column of the newest snapshot
    <root>/models/<M>/staged/<run>.parquet extract of a run, not yet diffed
    <root>/models/<M>/staged/extract.json  the checked extract the next diff takes
    <root>/models/<M>/log/NNNNNNNNN.parquet the changesets, in order (+ .json manifest)
    <root>/models/<M>/log/compacted.json   changesets up to here are folded away
    <root>/models/<M>/lease.json           which run holds the model
    <root>/syncs/<S>/state.json            cursor into the log, ledger file, resync epoch
    <root>/syncs/<S>/ledger-*.parquet      rows the sync still owes, with their reason
    <root>/syncs/<S>/checkpoint.jsonl      batches delivered by a run not yet committed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retl_assets.state.files import read_json, write_json

# Columns retl adds to rows; a model may not use names starting with the prefix.
PREFIX = "__retl_"
FP = "__retl_fp"  # fingerprint: a hash of every value of the row
OP = "__retl_op"  # added | updated | deleted
SEQ = "__retl_seq"  # position of the changeset in the model's log
MSGID = "__retl_msgid"  # idempotency key, fixed when the change is first owed
ERROR = "__retl_error"  # why a row is owed
ATTEMPTS = "__retl_attempts"
KEYTEXT = "__retl_key"  # the primary key as text
DEST_ID = "__retl_dest_id"  # the destination's own id of the record

# A snapshot or extract kept in the source's own warehouse (`diff: in_warehouse`) is named
# by this prefix and its table there, instead of by a file of the store.
IN_WAREHOUSE = "warehouse:"


@dataclass
class Head:
    """The committed state of a model."""

    version: int = 0
    snapshot: str | None = None  # relative to the model dir
    full: str | None = None
    log_seq: int = 0
    rows: int = 0
    run_id: str | None = None
    run_started_at: float | None = None  # drives {{last_sync_time}}
    columns: list[str] = field(default_factory=list)
    fingerprint: str = ""  # which algorithm fingerprinted the snapshot


@dataclass
class Extract:
    """An extract whose keys passed their checks, waiting for its diff: models/M writes it,
    diffs/M consumes it (in the same run or a later one)."""

    run_id: str
    file: str  # relative to the model dir
    rows: int
    run_started_at: float  # the extracting run's start: {{last_sync_time}} once committed


@dataclass
class SyncState:
    cursor: int | None = None  # last changeset consumed; None = never synced
    ledger: str | None = None  # file name of the owed rows
    epoch: int = 0  # bumped by each full resync so its messages are new to the vendor
    owed: int = 0
    ids: str | None = None  # file name of the key -> destination id map
    # The log position a full sync in progress stamps on its rows, fixed before it sends, so
    # a resumed full sync computes the same idempotency keys and its checkpoint matches.
    pending_full: int | None = None


class StateStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    # ------------------------------------------------------------ models
    def model_dir(self, model: str) -> Path:
        return self.root / "models" / model

    def head(self, model: str) -> Head:
        return Head(**read_json(self.model_dir(model) / "head.json", {}))

    def write_head(self, model: str, head: Head) -> None:
        write_json(self.model_dir(model) / "head.json", head.__dict__)

    def staged_path(self, model: str, run_id: str) -> Path:
        return self.model_dir(model) / "staged" / f"{run_id}.parquet"

    def extract_path(self, model: str) -> Path:
        return self.model_dir(model) / "staged" / "extract.json"

    def pending_extract(self, model: str) -> Extract | None:
        """The extract the next diff compares with the base; None once diffed (its file is
        moved into the snapshots or removed by the commit) or when none was made."""
        data = read_json(self.extract_path(model))
        extract = Extract(**data) if data else None
        if extract and (extract.file.startswith(IN_WAREHOUSE)
                        or (self.model_dir(model) / extract.file).exists()):
            return extract
        return None

    def write_pending_extract(self, model: str, extract: Extract) -> None:
        write_json(self.extract_path(model), extract.__dict__)

    def clear_pending_extract(self, model: str) -> None:
        self.extract_path(model).unlink(missing_ok=True)

    def log_path(self, model: str, seq: int) -> Path:
        return self.model_dir(model) / "log" / f"{seq:09d}.parquet"

    def log_manifest(self, model: str, seq: int) -> dict[str, Any]:
        return read_json(self.log_path(model, seq).with_suffix(".json"), {})

    def compacted_through(self, model: str) -> int:
        """The last changeset removed because every sync of the model had consumed it."""
        return int(read_json(self.model_dir(model) / "log" / "compacted.json", {}).get(
            "through", 0))

    def write_compacted_through(self, model: str, seq: int) -> None:
        write_json(self.model_dir(model) / "log" / "compacted.json", {"through": seq})

    def needs_full(self, model: str, state: SyncState) -> bool:
        """Whether a sync must take the snapshot whole: it never ran, or the changesets after
        its cursor were compacted away (a sync removed from the project file, then restored)."""
        return state.cursor is None or state.cursor < self.compacted_through(model)

    def lease_path(self, model: str) -> Path:
        return self.model_dir(model) / "lease.json"

    # ------------------------------------------------------------- syncs
    def sync_dir(self, sync: str) -> Path:
        return self.root / "syncs" / sync

    def sync_state(self, sync: str) -> SyncState:
        return SyncState(**read_json(self.sync_dir(sync) / "state.json", {}))

    def write_sync_state(self, sync: str, state: SyncState) -> None:
        write_json(self.sync_dir(sync) / "state.json", state.__dict__)

    def ledger_path(self, sync: str, state: SyncState) -> Path | None:
        return self.sync_dir(sync) / state.ledger if state.ledger else None

    def ids_path(self, sync: str, state: SyncState) -> Path | None:
        return self.sync_dir(sync) / state.ids if state.ids else None

    def checkpoint_path(self, sync: str) -> Path:
        return self.sync_dir(sync) / "checkpoint.jsonl"
