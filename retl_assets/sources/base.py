"""What every source offers: run a SELECT and stream its rows as Arrow record batches."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import pyarrow as pa

BATCH_ROWS = 64_000


class Source(Protocol):
    name: str

    def stream(self, sql: str) -> AbstractContextManager[pa.RecordBatchReader]:
        """Open the query and yield its rows as a reader; closes the connection on exit."""
        ...
