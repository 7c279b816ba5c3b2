"""Every package imports on its own, in a fresh interpreter (no import cycles)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PACKAGES = ["retl_assets", "retl_assets.project", "retl_assets.destinations",
            "retl_assets.emulators", "retl_assets.sources", "retl_assets.sync.ledger",
            "retl_assets.changeset.local", "retl_assets.mapping", "retl_assets.sync",
            "retl_assets.cli", "retl_assets.definitions"]


@pytest.mark.parametrize("name", PACKAGES)
def test_imports_alone(name):
    run = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                         text=True, timeout=120, env={"CIO_WRITE_KEY": "x", "PATH": ""})
    assert run.returncode == 0, run.stderr[-2000:]
