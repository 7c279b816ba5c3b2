"""The project-file examples in README.md load as written: users copy them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from retl_assets.project import load_project

README = Path(__file__).resolve().parent.parent / "README.md"


def yaml_blocks() -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]


def test_the_project_example_and_the_hubspot_example_load(tmp_path):
    blocks = yaml_blocks()
    project = next(b for b in blocks if "sources" in b and "models" in b)
    hubspot = next(b for b in blocks if b.get("destinations", {}).get("crm", {}).get("type")
                   == "hubspot")
    merged = {**project,
              "destinations": {**project["destinations"], **hubspot["destinations"]},
              "syncs": {**project["syncs"], **hubspot["syncs"]}}
    path = tmp_path / "retl.yaml"
    path.write_text(yaml.safe_dump(merged))
    loaded = load_project(path)
    assert set(loaded.config.syncs) == {"contacts_identify", "contacts_deleted",
                                        "contacts_to_crm"}
    assert loaded.config.syncs["contacts_to_crm"].selects == ("added", "updated", "deleted")
    assert loaded.models["contacts"].config.schedule.to_cron() == "*/15 * * * *"
