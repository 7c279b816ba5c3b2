"""Small file primitives the state store is built on: atomic writes and JSON pointers.

Every commit in retl is one `os.replace` of a small JSON file, so a killed process leaves
either the old state or the new one, never half of each.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def temp_path(final: Path) -> Path:
    """A sibling name to write to before moving into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")


def sql_path(path: Path) -> str:
    """A path quoted as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def remove(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            p.unlink(missing_ok=True)
