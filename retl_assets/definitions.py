"""The Definitions of the project named by RETL_PROJECT (else the bundled demo)."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster import AssetSelection, Definitions

from retl_assets.assets import build_retl_definitions
from retl_assets.automation import current_partition, partitions_for
from retl_assets.project import Project, load_project


def missing_partition(defs: Definitions, project: Project, argv: list[str]) -> str | None:
    """What to say when `dagster asset materialize` selects partitioned retl assets without
    `--partition`. Dagster's CLI checks that before any retl code runs and stops with a bare
    CheckError, so this module, which it imports first, says which partition to pass."""
    args = argv[1:]
    if Path(argv[0]).name != "dagster" or args[:2] != ["asset", "materialize"]:
        return None
    if any(a.startswith("--partition") for a in args):
        return None
    select = next((a.split("=", 1)[1] for a in args if a.startswith("--select=")), None)
    if select is None and "--select" in args[:-1]:
        select = args[args.index("--select") + 1]
    if not select:
        return None
    graph = defs.resolve_asset_graph()
    try:
        keys = AssetSelection.from_coercible(select.split(",")).resolve(graph)
    except Exception:  # an unknown key: Dagster's own message says it
        return None
    models = sorted({graph.get(k).tags.get("retl/model", "") for k in keys
                     if graph.get(k).partitions_def is not None} - {""})
    current = {m: current_partition(partitions_for(project.models[m])) for m in models
               if m in project.models}
    if not current:
        return None
    which = ", ".join(f"{m}: {p}" for m, p in current.items())
    example = next(iter(current.values()))
    return (f"retl: the selected assets are partitioned by their model's schedule, one "
            f"partition per tick; pass the tick to sync with --partition, e.g. the current "
            f"one ({which}): --partition {example}. `retl sync MODEL` picks it for you.")


_project = load_project()
defs = build_retl_definitions(_project)
if (_hint := missing_partition(defs, _project, sys.argv)) is not None:
    sys.exit(_hint)
