"""The public names, the translator's override point and the component."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetKey, AssetSpec
from dagster.components.testing.utils import component_defs

import retl_assets
from retl_assets import RetlAssetData, RetlProjectComponent, RetlTranslator
from retl_assets.assets import build_retl_definitions


def test_public_names_are_pinned():
    assert sorted(retl_assets.__all__) == sorted([
        "AuthError", "DestinationError", "LeaseHeldError", "ModelError", "Project",
        "ProjectError", "RetlAssetData", "RetlError", "RetlProjectComponent", "RetlTranslator",
        "SetupError", "SourceError", "UnreachableError", "build_retl_definitions", "build_retl_specs",
        "load_project",
    ])


@dataclass(frozen=True)
class TeamTranslator(RetlTranslator):
    def get_asset_spec(self, data: RetlAssetData) -> AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(key=spec.key.with_prefix("crm_team"),
                                       group_name="reverse_etl", owners=["team:growth"])


def test_translator_renames_keys_and_the_graph_follows(workspace, emulator):
    defs = build_retl_definitions(workspace.project, TeamTranslator())
    graph = defs.resolve_asset_graph()
    diff = AssetKey(["crm_team", "diffs", "contacts"])
    assert graph.get(diff).parent_keys == {AssetKey(["crm_team", "models", "contacts"])}
    sync = graph.get(AssetKey(["crm_team", "syncs", "contacts_identify"]))
    assert sync.parent_keys == {diff}
    assert sync.group_name == "reverse_etl" and sync.owners == ["team:growth"]


def test_component_loads_the_project_file(workspace):
    defs = component_defs(component=RetlProjectComponent(
        project_file=str(workspace.root / "retl.yaml")))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.materializable_asset_keys}
    assert keys == {"models/contacts", "diffs/contacts", "syncs/contacts_identify",
                    "syncs/contacts_deleted"}
    # The table the model reads is its upstream, outside the code location (a dbt asset's key).
    assert graph.get(AssetKey(["models", "contacts"])).parent_keys == {AssetKey(["contacts"])}
    assert not graph.get(AssetKey(["contacts"])).is_materializable
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"retl_contacts"}
