"""The project file as Dagster definitions: specs, assets, checks, jobs, schedules, sensors,
resources."""

from __future__ import annotations

from dagster import AssetSelection, AssetSpec, Definitions, define_asset_job

from retl_assets.assets.factory import diff_asset, model_asset, sync_asset
from retl_assets.assets.resources import (
    RetlDestinations,
    RetlSources,
    RetlStateStore,
    retl_resources,
)
from retl_assets.assets.translator import RetlAssetData, RetlTranslator
from retl_assets.automation import (
    model_schedule,
    model_source_changed,
    model_trigger,
    partitions_for,
)
from retl_assets.automation.changes import change_marker
from retl_assets.project import Project


def job_name(model: str) -> str:
    return f"retl_{model}"


def build_retl_specs(project: Project, translator: RetlTranslator | None = None
                     ) -> list[tuple[RetlAssetData, AssetSpec]]:
    """Every asset the project defines, as (what it is, its spec)."""
    translator = translator or RetlTranslator()
    default = RetlTranslator()
    out = []
    for name, model in project.models.items():
        parts = partitions_for(model)
        entries = [RetlAssetData("model", name, name, project, parts),
                   RetlAssetData("diff", name, name, project, parts)]
        entries += [RetlAssetData("sync", s, name, project, parts) for s in project.syncs_of(name)]
        out += [(data, translator.get_asset_spec(data)) for data in entries]
    # A translator may rename keys; point every dependency at the renamed key.
    renamed = {default.get_asset_spec(d).key: s.key for d, s in out}
    return [(d, s.replace_attributes(deps=[
        renamed.get(dep.asset_key, dep.asset_key) for dep in s.deps])) for d, s in out]


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
    return Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                       resources=retl_resources(project))


__all__ = ["RetlAssetData", "RetlDestinations", "RetlSources", "RetlStateStore",
           "RetlTranslator", "build_retl_definitions", "build_retl_specs", "job_name",
           "retl_resources"]
