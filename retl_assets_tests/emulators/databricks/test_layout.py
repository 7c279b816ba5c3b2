"""The emulator is an oracle of Databricks' API, apart from the source it tests."""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb

from retl_assets import vendors
from retl_assets.emulators.common import Faults
from retl_assets.emulators.server import EmulatorServer

FOLDER = Path(__file__).resolve().parents[3] / "retl_assets" / "emulators" / "databricks"


def test_the_emulator_never_imports_retls_sources_or_destinations():
    for path in FOLDER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("retl_assets.sources", "retl_assets.destinations")), (
                    path.name, name)


def test_make_app_serves_what_retl_emulate_asks_for(tmp_path):
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    module = vendors.emulator("databricks")
    app = module.make_app("databricks", {"t"}, Faults(), None, database=path)
    with EmulatorServer(app).start() as server:
        import requests

        assert requests.get(f"{server.url}/healthz", timeout=5).json() == {"ok": True}
        answer = requests.post(f"{server.url}/api/2.0/sql/statements", timeout=10,
                               headers={"Authorization": "Bearer t"},
                               json={"statement": "SELECT 1 AS one", "warehouse_id": "emulated"})
        assert answer.json()["result"]["data_array"] == [["1"]]
