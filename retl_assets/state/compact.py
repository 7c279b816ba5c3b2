"""Fold away the changesets every sync of a model has consumed, so the log stays bounded.

A changeset is needed only by a sync whose cursor is before it. Syncs with no cursor take the
snapshot whole, so they need none. The newest changeset stays (an empty work set takes its
shape), and so does the first one's manifest (the model's partitions start at it). A sync
whose cursor is behind what was folded away (it was removed from the project file, then
restored) takes the snapshot whole on its next run: `StateStore.needs_full`.
"""

from __future__ import annotations

from collections.abc import Iterable

from retl_assets.state.files import remove
from retl_assets.state.store import StateStore


def compact_log(store: StateStore, model: str, syncs: Iterable[str]) -> int:
    """Remove the changesets every sync in `syncs` (all of the model's, enabled or not) has
    consumed; returns how many went. Call it holding the model's lease."""
    head = store.head(model)
    cursors = [c for c in (store.sync_state(s).cursor for s in syncs) if c is not None]
    through = min(min(cursors, default=head.log_seq), head.log_seq - 1)
    done = store.compacted_through(model)
    if through <= done:
        return 0
    for seq in range(done + 1, through + 1):
        log = store.log_path(model, seq)
        remove(log, None if seq == 1 else log.with_suffix(".json"))
    store.write_compacted_through(model, through)
    return through - done
