"""The local DuckDB engine every state step runs its SQL on."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb


def memory_limit() -> str:
    return os.environ.get("RETL_MEMORY_LIMIT", "768MB")


def connect(spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB bounded in memory, spilling to the state store when it must."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={
        "memory_limit": memory_limit(),
        "temp_directory": str(spill_dir),
        # Order of rows in a snapshot means nothing; dropping it lets writes stream.
        "preserve_insertion_order": False,
    })
    con.execute("SET enable_progress_bar = false")  # a session option only
    return con


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def columns(con: duckdb.DuckDBPyConnection, parquet: Path) -> list[tuple[str, str]]:
    """(name, type) of a Parquet file's columns."""
    from retl_assets.state.files import sql_path

    rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(parquet)})").fetchall()
    return [(r[0], r[1]) for r in rows]
