"""The project file as Dagster definitions: specs, assets, checks, jobs, schedules, sensors,
resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    AssetSpec,
    Definitions,
    TableColumnDep,
    TableColumnLineage,
    define_asset_job,
)

from retl_assets.assets.factory import diff_asset, model_asset, sync_asset
from retl_assets.assets.resources import (
    RetlDestinations,
    RetlSources,
    RetlStateStore,
    retl_resources,
)
from retl_assets.assets.switch_job import switch_job
from retl_assets.assets.translator import COLUMN_LINEAGE, RetlAssetData, RetlTranslator
from retl_assets.automation import (
    SyncAsset,
    alert_sensor,
    model_schedule,
    model_source_changed,
    model_trigger,
    project_partitions,
)
from retl_assets.automation.changes import change_marker
from retl_assets.project import Project
from retl_assets.state.store import StateStore


def job_name(model: str) -> str:
    return f"retl_{model}"


def build_retl_specs(project: Project, translator: RetlTranslator | None = None
                     ) -> list[tuple[RetlAssetData, AssetSpec]]:
    """Every asset the project defines, as (what it is, its spec)."""
    translator = translator or RetlTranslator()
    default = RetlTranslator()
    # The partitions start where retl began syncing (automation.partitions says why).
    partitions = project_partitions(project, StateStore(project.state_dir))
    out = []
    for name in project.models:
        parts = partitions[name]
        entries = [RetlAssetData("model", name, name, project, parts),
                   RetlAssetData("diff", name, name, project, parts)]
        entries += [RetlAssetData("sync", s, name, project, parts) for s in project.syncs_of(name)]
        out += [(data, translator.get_asset_spec(data)) for data in entries]
    # A translator may rename keys; point every dependency at the renamed key.
    renamed = {default.get_asset_spec(d).key: s.key for d, s in out}
    return [(d, s.replace_attributes(
        deps=[renamed.get(dep.asset_key, dep.asset_key) for dep in s.deps],
        metadata=_renamed_lineage(s.metadata, renamed))) for d, s in out]


def _renamed_lineage(metadata: Mapping[str, Any], renamed: dict[AssetKey, AssetKey]
                     ) -> dict[str, Any]:
    lineage = metadata.get(COLUMN_LINEAGE)
    if not isinstance(lineage, TableColumnLineage):
        return dict(metadata)
    return {**metadata, COLUMN_LINEAGE: TableColumnLineage(deps_by_column={
        field: [TableColumnDep(renamed.get(d.asset_key, d.asset_key), d.column_name)
                for d in deps] for field, deps in lineage.deps_by_column.items()})}


def build_retl_definitions(project: Project, translator: RetlTranslator | None = None
                           ) -> Definitions:
    factories = {"model": model_asset, "diff": diff_asset, "sync": sync_asset}
    assets, jobs, schedules, sensors = [], [], [], []
    specs = build_retl_specs(project, translator)
    for name, model in project.models.items():
        mine = [(d, s) for d, s in specs if d.model == name]
        model_assets = [factories[d.kind](project, d.name, s) for d, s in mine]
        assets += model_assets
        # Disabled syncs stay visible as assets but the job leaves them out until enabled.
        keys = [s.key for d, s in mine
                if d.kind != "sync" or project.config.syncs[d.name].enabled]
        job = define_asset_job(
            job_name(name), selection=AssetSelection.assets(*keys),
            tags={"retl/model": name},
            description=f"Extract, diff and deliver model {name}",
        )
        jobs.append(job)
        if model.config.schedule:
            schedules.append(model_schedule(model, job))
        trigger = model.config.trigger
        if trigger and trigger.asset is not None:
            sensors.append(model_trigger(model, job))
        elif trigger:
            sensors.append(model_source_changed(
                model, job, lambda model=model: change_marker(project, model)))
    # The run-time switch (retl_assets.switch) and the alerts (retl_assets.automation.alerts).
    jobs.append(switch_job(project))
    from retl_assets.assets.dry_run import dry_run_job  # the Launchpad's dry run of one sync

    jobs.append(dry_run_job(project, {d.name: s.key for d, s in specs if d.kind == "sync"}))
    if project.config.alerts is not None:
        ops = {key: a.op.name for a in assets for key in a.keys}
        synced = [SyncAsset(d.name, s.key, ops[s.key]) for d, s in specs if d.kind == "sync"]
        sensors.append(alert_sensor(project, synced, {
            job_name(m): [s for s, c in project.syncs_of(m).items() if c.enabled]
            for m in project.models}))
    return Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                       resources=retl_resources(project))


__all__ = ["RetlAssetData", "RetlDestinations", "RetlSources", "RetlStateStore",
           "RetlTranslator", "build_retl_definitions", "build_retl_specs", "job_name",
           "retl_resources"]
