"""Run history and sync health: what `retl status` shows.

A run belongs to a model by its `retl/model` tag (the model's job and `retl sync` set it),
else by what it selected: `dagster asset materialize` and the UI's Materialize button start
`__ASSET_JOB` runs with no tag, failures included. A run of several models is listed once
per model. Only run records are read for every run looked at; a run's events are read (one
indexed query of a few event types) only for the runs shown or counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dagster import AssetKey, DagsterInstance, DagsterRun, RunRecord

from retl_assets.assets import build_retl_specs, job_name
from retl_assets.assets.runtime import MODEL_TAG
from retl_assets.errors import ProjectError
from retl_assets.project import Project
from retl_assets.runner import STEP_KEY, RunSummary, run_events, summarize
from retl_assets.state.store import StateStore

SCAN = 500  # run records looked at, newest first: how far back history goes
FINISHED = {"success", "failure", "canceled"}


@dataclass
class SyncHealth:
    sync: str
    model: str
    enabled: bool
    runs: int  # finished runs of the sync counted (at most --runs-for-health)
    succeeded: int  # of those, the runs in which the sync delivered without an error
    last_status: str | None  # the newest counted run's outcome for the sync
    last_success_at: float | None  # Unix seconds
    last_success_run: str | None
    owed: int  # rows in the sync's ledger: rejected, invalid or not delivered, kept to retry
    pending: int  # changes recorded since the sync's cursor, not yet delivered

    @property
    def success_rate(self) -> float | None:
        return round(self.succeeded / self.runs, 3) if self.runs else None

    def as_dict(self) -> dict:
        return {**self.__dict__, "success_rate": self.success_rate}


def resolve(project: Project, name: str | None) -> tuple[str | None, str | None]:
    """(model, sync) that `name` names; (None, None) for every model."""
    if name is None:
        return None, None
    if name in project.models:
        return name, None
    if name in project.config.syncs:
        return project.config.syncs[name].model, name
    raise ProjectError(f"no model or sync named {name!r} (models: {', '.join(project.models)}; "
                       f"syncs: {', '.join(project.config.syncs)})")


def runs(instance: DagsterInstance, project: Project, name: str | None = None,
         limit: int = 20, scan: int = SCAN) -> list[RunSummary]:
    """The newest runs of the project's models (or of one model or sync), newest first."""
    model, sync = resolve(project, name)
    out = []
    for summary in _summaries(instance, project, model, sync, scan):
        out.append(summary)
        if len(out) >= limit:
            break
    return out


def health(instance: DagsterInstance, project: Project, name: str | None = None,
           runs_for_health: int = 20, scan: int = SCAN) -> list[SyncHealth]:
    """For each sync (or the one named, or those of the model named): its last success, its
    success rate over its last `runs_for_health` finished runs, and what it owes now."""
    model, sync = resolve(project, name)
    names = [sync] if sync else [s for s, c in project.config.syncs.items()
                                 if model is None or c.model == model]
    store = StateStore(project.state_dir)
    table = {s: _empty_health(project, store, s) for s in names}
    wanted = {project.config.syncs[s].model for s in names}
    open_ = set(names) if runs_for_health > 0 else set()  # syncs still counting runs
    for summary in _summaries(instance, project, None, None, scan, models=wanted):
        if not open_:
            break
        for s in [s for s in open_ if project.config.syncs[s].model == summary.model]:
            outcome = _outcome(summary, s)
            if outcome is None:
                continue
            h = table[s]
            h.runs += 1
            h.last_status = h.last_status or outcome
            if outcome == "success":
                h.succeeded += 1
                if h.last_success_run is None:
                    h.last_success_at, h.last_success_run = summary.ended_at, summary.run_id
            if h.runs >= runs_for_health:
                open_.discard(s)
    keys = _asset_models(project)
    for s, h in table.items():
        if h.last_success_run is None:
            _last_success_before(instance, keys, s, h)
    return list(table.values())


def _summaries(instance: DagsterInstance, project: Project, model: str | None,
               sync: str | None, scan: int, models: set[str] | None = None
               ) -> Iterator[RunSummary]:
    keys = _asset_models(project)
    for record in instance.get_run_records(limit=scan):
        run = record.dagster_run
        found = models_of(run, project, keys)
        if not found:
            continue
        events = None
        for m in found:
            if (model and m != model) or (models is not None and m not in models):
                continue
            if events is None:
                events = run_events(instance, run.run_id)
            summary = _summary(instance, project, record, m, events)
            if sync and not _touches(summary, run, project, sync, keys):
                continue
            if sync:
                summary.syncs = {k: v for k, v in summary.syncs.items() if k == sync}
            yield summary


def _summary(instance: DagsterInstance, project: Project, record: RunRecord, model: str,
             events: list) -> RunSummary:
    run = record.dagster_run
    summary = summarize(instance, model, run.run_id, run.tags.get("dagster/partition"),
                        syncs=set(project.syncs_of(model)), events=events, record=record)
    summary.status = run.status.value.lower()
    return summary


def models_of(run: DagsterRun, project: Project,
              keys: dict[AssetKey, tuple[str, str]] | None = None) -> list[str]:
    """The project's models a run ran: by its tag or job, else by the assets or steps it
    selected. Empty for a run of anything else."""
    tagged = run.tags.get(MODEL_TAG)
    if tagged in project.models:
        return [tagged]
    for m in project.models:
        if run.job_name == job_name(m):
            return [m]
    keys = keys if keys is not None else _asset_models(project)
    found: list[str] = []
    for key in run.asset_selection or ():
        if key in keys:
            found.append(keys[key][0])
    for step in run.step_keys_to_execute or ():
        match = STEP_KEY.fullmatch(step)
        if match and match.group(1) == "sync":
            sync = project.config.syncs.get(match.group(2))
            found += [sync.model] if sync else []
        elif match:
            found.append(match.group(2))
    return [m for m in dict.fromkeys(found) if m in project.models]


def _asset_models(project: Project) -> dict[AssetKey, tuple[str, str]]:
    """Asset key -> (model, the sync or ""), by the default translator's keys. Renamed keys
    are not known here; a run's step keys (op names) still name its models."""
    out: dict[AssetKey, tuple[str, str]] = {}
    for data, spec in build_retl_specs(project):
        out[spec.key] = (data.model, data.name if data.kind == "sync" else "")
    return out


def _touches(summary: RunSummary, run: DagsterRun, project: Project, sync: str,
             keys: dict[AssetKey, tuple[str, str]]) -> bool:
    """Whether the run delivered, failed or planned `sync`."""
    if sync in summary.syncs or sync in summary.skipped_syncs:
        return True
    if run.asset_selection is not None:
        return any(keys.get(k) == (summary.model, sync) for k in run.asset_selection)
    return project.config.syncs[sync].enabled


def _outcome(summary: RunSummary, sync: str) -> str | None:
    """The sync's outcome in a finished run: success | failure | skipped | canceled; None
    when the run is not finished or did not include the sync."""
    if summary.status not in FINISHED:
        return None
    if sync in summary.syncs:
        return summary.syncs[sync].get("status") or "success"
    if sync in summary.skipped_syncs:
        return "skipped"
    return None


def _empty_health(project: Project, store: StateStore, sync: str) -> SyncHealth:
    config = project.config.syncs[sync]
    state = store.sync_state(sync)
    return SyncHealth(sync, config.model, config.enabled, 0, 0, None, None, None, state.owed,
                      _pending(project, store, sync))


def _pending(project: Project, store: StateStore, sync: str) -> int:
    """Changes the sync has not consumed yet: the whole model for a sync never run, else the
    rows of the changesets after its cursor that it selects (before collapsing per key)."""
    config = project.config.syncs[sync]
    head = store.head(config.model)
    state = store.sync_state(sync)
    if head.version == 0:
        return 0
    if store.needs_full(config.model, state):
        return head.rows if "added" in config.selects else 0
    total = 0
    for seq in range(state.cursor + 1, head.log_seq + 1):
        manifest = store.log_manifest(config.model, seq)
        if manifest.get("initial"):
            return head.rows
        total += sum(int(manifest.get(change, 0)) for change in config.selects)
    return total


def _last_success_before(instance: DagsterInstance, keys: dict[AssetKey, tuple[str, str]],
                         sync: str, h: SyncHealth) -> None:
    """A last success older than the runs counted: the sync asset's newest materialisation
    (by its default key; a renamed key leaves it unknown)."""
    key = next((k for k, v in keys.items() if v[1] == sync), None)
    entry = instance.get_latest_materialization_event(key) if key else None
    if entry is not None:
        h.last_success_at, h.last_success_run = entry.timestamp, entry.run_id
