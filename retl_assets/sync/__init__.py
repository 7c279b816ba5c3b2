"""One sync's run as a straight pipeline: work set (ledger.py) -> payloads -> delivery ->
outcomes committed to the ledger (run.py)."""

from retl_assets.sync.run import SyncResult, run_sync

__all__ = ["SyncResult", "run_sync"]
