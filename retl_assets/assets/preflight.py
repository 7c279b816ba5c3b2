"""Before a model's extract is accepted: can every sync of this run send it?

A bad mapping or a missing secret would otherwise show only in `syncs/S`, after the snapshot
and changeset were committed, and the changes would wait on a sync that cannot send them.
`models/M` asks here first, as `retl validate` does, against the extract's own columns, so
such a run fails naming the sync and the field, with nothing committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from retl_assets.destinations import open_destination
from retl_assets.errors import ProjectError, RetlError
from retl_assets.mapping import plan
from retl_assets.project import Project


def sync_problems(project: Project, model: str, columns: dict[str, str],
                  syncs: Iterable[str]) -> list[str]:
    """What stops each of `syncs` (of `model`) from sending an extract with `columns`."""
    problems = []
    for name in sorted(syncs):
        sync = project.config.syncs[name]
        try:
            writer = open_destination(project, sync.destination).writer(name, sync)
            for operation in sorted(set(writer.operations().values())):
                plan(name, sync, model, columns, writer.rules(operation))
        except RetlError as e:  # each names the sync (or its destination) and the field
            problems.append(f"sync {name!r}: {e.description or e}")
    return problems


def check_syncs(project: Project, model: str, columns: dict[str, str],
                syncs: Iterable[str]) -> None:
    problems = sync_problems(project, model, columns, syncs)
    if problems:
        raise ProjectError(
            f"model {model!r}: its extract was not accepted, nothing was committed, because "
            f"{'a sync' if len(problems) == 1 else 'syncs'} of this run cannot send it: "
            + "; ".join(problems) + ". Fix the project file (or set the secret) and run again")
