"""Project entries -> AssetSpecs, with one override point a team can subclass.

Upstream lineage: each table a model's SQL reads becomes a `deps` key of `models/M`, its
name as the SQL spells it split on dots (quotes dropped): `contacts` -> `contacts`,
`analytics.contacts` -> `analytics/contacts`. That is what dagster-dbt names a model by
default (`[name]`, or `[schema, name]` when the model sets its own `schema:`) and a dbt
source (`[source_name, table]`), so dbt assets of those names connect with no config.
Name the table the way dbt keys it, or override `get_asset_spec` and map
`data.tables_read` to your keys (e.g. keep only the last part).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from dagster import (
    AssetKey,
    AssetSpec,
    MetadataValue,
    PartitionsDefinition,
    TableColumnDep,
    TableColumnLineage,
)
from jinja2 import Environment, meta

from retl_assets.project import Project
from retl_assets.project.query import QueryRefused, tables_read
from retl_assets.project.schema import Constant, SyncConfig, Template

COLUMN_LINEAGE = "dagster/column_lineage"
# Shown on every node of the asset graph (the node's label is only its key's last part,
# `contacts` for both models/contacts and diffs/contacts): the kind tells them apart.
KIND = {"model": "snapshot", "diff": "changeset", "sync": "sync"}


def table_key(table: str) -> AssetKey:
    """The asset key of a table a model reads: its name split on dots, quotes dropped."""
    return AssetKey([part.strip('"`[]') for part in table.split(".")])


@dataclass(frozen=True)
class RetlAssetData:
    """What the translator sees of one asset-to-be."""

    kind: Literal["model", "diff", "sync"]
    name: str  # the model's or the sync's name
    model: str
    project: Project
    partitions_def: PartitionsDefinition | None

    @cached_property
    def tables_read(self) -> list[str]:
        """The tables the model's SQL reads, as it spells them (see the module docstring)."""
        model = self.project.models[self.model]
        try:
            return tables_read(model.render_sql(0), model.dialect)
        except (QueryRefused, ValueError):  # the loader refused such SQL already
            return []


@dataclass(frozen=True)
class RetlTranslator:
    """Override `get_asset_spec` to rename keys, add groups, owners, tags or `deps`."""

    def get_asset_spec(self, data: RetlAssetData) -> AssetSpec:
        project, model = data.project, data.project.models[data.model]
        source = project.config.sources[model.config.source]
        sql_hash = _hash(model.sql)
        about_source = {"source": f"{model.config.source} ({source.type})",
                        "primary_key": ", ".join(model.keys)}
        if data.kind == "model":
            deps = [table_key(t) for t in data.tables_read]
            if model.config.trigger and model.config.trigger.asset is not None:
                upstream = AssetKey(model.config.trigger.asset_path())
                deps += [upstream] if upstream not in deps else []
            return AssetSpec(
                key=AssetKey(["models", data.name]), group_name=data.model, deps=deps,
                description=model.config.description or f"Snapshot of model {data.name}",
                kinds={source.type, KIND["model"]}, partitions_def=data.partitions_def,
                tags={"retl/model": data.model}, owners=model.config.owners,
                code_version=sql_hash,
                metadata={**about_source, "sql": MetadataValue.md(f"```sql\n{model.sql}\n```")},
            )
        if data.kind == "diff":
            where = source.type if model.config.diff == "in_warehouse" else "duckdb"
            return AssetSpec(
                key=AssetKey(["diffs", data.name]), group_name=data.model,
                deps=[AssetKey(["models", data.name])],
                description=f"Changeset of model {data.name}: rows added, updated and deleted "
                            "since the last run",
                kinds={where, KIND["diff"]}, partitions_def=data.partitions_def,
                tags={"retl/model": data.model}, owners=model.config.owners,
                code_version=_hash(model.sql, model.keys, model.config.diff),
                metadata={**about_source, "diff": model.config.diff,
                          "max_delete_fraction": model.config.max_delete_fraction},
            )
        sync = project.config.syncs[data.name]
        dest = project.config.destinations[sync.destination]
        config = sync.model_dump(mode="json", exclude={"description", "owners", "alerts"})
        lineage = column_lineage(sync, AssetKey(["models", data.model]))
        return AssetSpec(
            key=AssetKey(["syncs", data.name]), group_name=data.model,
            deps=[AssetKey(["diffs", data.model])],
            description=sync.description or _describe(sync),
            kinds={dest.type, KIND["sync"]}, partitions_def=data.partitions_def,
            tags={"retl/model": data.model, "retl/destination": sync.destination},
            owners=sync.owners or model.config.owners,
            code_version=_hash(model.sql, config),
            metadata={
                "destination": f"{sync.destination} ({dest.type})",
                "action": sync.action,
                "records": " + ".join(sync.selects),
                "object": sync.object or "(the action's own)",
                "mapping": MetadataValue.json(config["mapping"] or {
                    "(every column)": "by name, as the destination places them"}),
                "enabled": sync.enabled,
                **({COLUMN_LINEAGE: lineage} if lineage else {}),
            },
        )


def _describe(sync: SyncConfig) -> str:
    records = sync.records or ("every change" if sync.action == "mirror" else "added and updated")
    return f"{sync.action} {records} rows of {sync.model} to {sync.destination}"


def column_lineage(sync: SyncConfig, model_key: AssetKey) -> TableColumnLineage | None:
    """Destination field <- the model's columns, from the mapping as written. A sync with no
    mapping sends every column by name; those are known only once its query runs, so it has
    none here."""
    if sync.mapping is None:
        return None
    used: dict[str, list[str]] = {}
    for field, source in sync.mapping.items():
        if isinstance(source, Constant):
            continue
        if isinstance(source, Template):
            columns = sorted(meta.find_undeclared_variables(Environment().parse(source.template)))
        else:
            columns = [source]
        if columns:
            used[field] = columns
    for field, column in (sync.match or {}).items():
        used.setdefault(field, [column])
    for obj, match in (sync.associations or {}).items():
        for field, column in match.items():
            used.setdefault(f"{obj}.{field}", [column])
    if not used:
        return None
    return TableColumnLineage(deps_by_column={
        field: [TableColumnDep(asset_key=model_key, column_name=c) for c in columns]
        for field, columns in used.items()})


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
