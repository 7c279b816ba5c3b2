"""Project entries -> AssetSpecs, with one override point a team can subclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dagster import AssetKey, AssetSpec, PartitionsDefinition

from retl_assets.project import Project


@dataclass(frozen=True)
class RetlAssetData:
    """What the translator sees of one asset-to-be."""

    kind: Literal["model", "diff", "sync"]
    name: str  # the model's or the sync's name
    model: str
    project: Project
    partitions_def: PartitionsDefinition | None


@dataclass(frozen=True)
class RetlTranslator:
    """Override `get_asset_spec` to rename keys, add groups, owners, tags or `deps`."""

    def get_asset_spec(self, data: RetlAssetData) -> AssetSpec:
        project, model = data.project, data.project.models[data.model]
        source = project.config.sources[model.config.source].type
        if data.kind == "model":
            deps = []
            if model.config.trigger and model.config.trigger.asset is not None:
                deps.append(AssetKey(model.config.trigger.asset_path()))
            return AssetSpec(
                key=AssetKey(["models", data.name]), group_name=data.model, deps=deps,
                description=model.config.description or f"Snapshot of model {data.name}",
                kinds={source}, partitions_def=data.partitions_def,
                tags={"retl/model": data.model},
            )
        if data.kind == "diff":
            return AssetSpec(
                key=AssetKey(["diffs", data.name]), group_name=data.model,
                deps=[AssetKey(["models", data.name])],
                description=f"Rows added, updated and deleted in {data.name} since the last run",
                kinds={"duckdb"}, partitions_def=data.partitions_def,
                tags={"retl/model": data.model},
            )
        sync = project.config.syncs[data.name]
        dest = project.config.destinations[sync.destination]
        return AssetSpec(
            key=AssetKey(["syncs", data.name]), group_name=data.model,
            deps=[AssetKey(["diffs", data.model])],
            description=sync.description or (
                f"{sync.action} {sync.records} rows of {sync.model} to {sync.destination}"),
            kinds={dest.type}, partitions_def=data.partitions_def,
            tags={"retl/model": data.model, "retl/destination": sync.destination},
        )
