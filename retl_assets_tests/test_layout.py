"""The shape the code promises: one registry, one folder per destination and per emulator,
arrows that point one way."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retl_assets import vendors

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "retl_assets"


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_an_emulator_never_imports_retls_destinations():
    # The emulators and the writers are independent oracles of the vendor's contract: an
    # emulator that reused a writer's facts would agree with it by construction.
    for path in (PACKAGE / "emulators").rglob("*.py"):
        wrong = {m for m in imports(path) if m.startswith("retl_assets.destinations")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_project_loader_names_no_vendor_module():
    for path in (PACKAGE / "project").rglob("*.py"):
        wrong = {m for m in imports(path) if m.startswith("retl_assets.destinations")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("kind", vendors.destination_types())
def test_every_registered_destination_has_its_facts_and_emulator(kind):
    facts = vendors.destination(kind)
    assert facts is not None and facts.actions and callable(facts.connect)
    assert hasattr(vendors.emulator(kind), "make_app")


def test_each_destination_folder_imports_alone():
    for folder in sorted(set(vendors.DESTINATIONS.values())):
        run = subprocess.run([sys.executable, "-c", f"import retl_assets.destinations.{folder}"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (folder, run.stderr[-1500:])


def test_readmes_destinations_table_is_the_registry():
    text = (ROOT / "README.md").read_text()
    table = text.split("| type | credentials |", 1)[1].split("\n\n", 1)[0]
    listed = set()
    for row in table.splitlines()[2:]:
        listed |= set(re.findall(r"`([a-z]+)`", row.split("|")[1]))
    assert listed == set(vendors.destination_types())


@pytest.mark.parametrize("kind", vendors.source_types())
def test_every_registered_source_has_its_facts_in_a_folder_that_imports_alone(kind):
    facts = vendors.source(kind)
    assert facts is not None and callable(facts.connect) and facts.tested
    # The type is named as sqlglot names the warehouse's dialect: one word for both.
    assert facts.dialect == kind
    run = subprocess.run([sys.executable, "-c", f"import retl_assets.sources.{kind}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1500:]
    if facts.in_warehouse:
        source_module = (PACKAGE / "sources" / vendors.SOURCES[kind] / "source.py").read_text()
        assert "def state_session" in source_module
    if facts.change_marker:
        source_module = (PACKAGE / "sources" / vendors.SOURCES[kind] / "source.py").read_text()
        assert "def version" in source_module


def test_emulators_and_sources_are_independent_oracles():
    # A warehouse emulator that reused the source's code would agree with it by construction.
    for path in (PACKAGE / "emulators").rglob("*.py"):
        wrong = {m for m in imports(path) if m.startswith("retl_assets.sources")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
    for path in (PACKAGE / "sources").rglob("*.py"):
        wrong = {m for m in imports(path)
                 if m.startswith(("retl_assets.destinations", "retl_assets.emulators"))}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_readmes_warehouse_table_is_the_registry():
    text = (ROOT / "README.md").read_text()
    table = text.split("| type | connects with |", 1)[1].split("\n\n", 1)[0]
    listed = {re.findall(r"`([a-z]+)`", row.split("|")[1])[0] for row in table.splitlines()[2:]}
    assert listed == set(vendors.source_types())
