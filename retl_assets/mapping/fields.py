"""Columns -> destination fields, compiled to one DuckDB JSON expression per record.

Encoding in DuckDB turns whole batches into JSON text at once, vectorised, instead of
building a Python dict per record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Union

from retl_assets.errors import ProjectError
from retl_assets.mapping.templates import template_sql
from retl_assets.project.schema import Constant, SyncConfig, Template
from retl_assets.state.engine import quote


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Raw:
    """An SQL expression supplied by retl itself (e.g. the idempotency key)."""

    sql: str


Expr = Union[Column, Literal, Raw]
Tree = dict[tuple[str, ...], Expr]


@dataclass(frozen=True)
class Rules:
    """How a destination places columns that the user did not place by a dotted path."""

    top_level: frozenset[str]  # fields that stay at the top of the payload
    container: str | None  # where every other field goes (traits, properties, ...)
    as_string: frozenset[str] = frozenset()  # top-level fields sent as strings


def plan(sync_name: str, sync: SyncConfig, model: str, columns: dict[str, str],
         rules: Rules) -> Tree:
    """The destination paths of a sync's payload, each with where its value comes from."""
    if sync.mapping is None:
        pairs: list[tuple[str, Expr]] = [(c, Column(c)) for c in columns]
    else:
        pairs = []
        for field, src in sync.mapping.items():
            if isinstance(src, Constant):
                pairs.append((field, Literal(src.value)))
                continue
            if isinstance(src, Template):
                where = f"syncs.{sync_name}.mapping.{field}"
                pairs.append((field, Raw(template_sql(src.template, set(columns), where))))
                continue
            if src not in columns:
                raise ProjectError(
                    f"syncs.{sync_name}.mapping.{field}: column {src!r} is not in model "
                    f"{model!r} (columns: {', '.join(columns)})"
                )
            pairs.append((field, Column(src)))
    for obj, match in (sync.associations or {}).items():
        for field, src in match.items():
            if src not in columns:
                raise ProjectError(
                    f"syncs.{sync_name}.associations.{obj}.{field}: column {src!r} is not in "
                    f"model {model!r} (columns: {', '.join(columns)})")
    tree: Tree = {}
    for field, expr in pairs:
        path = tuple(field.split("."))
        if len(path) == 1 and field not in rules.top_level and rules.container:
            path = (rules.container, field)
        if path in tree:
            raise ProjectError(f"syncs.{sync_name}.mapping: field {'.'.join(path)} is set twice")
        tree[path] = expr
    return tree


def json_sql(tree: Tree, types: dict[str, str], rules: Rules, skip_nulls: bool = False) -> str:
    """A DuckDB expression that builds the payload as JSON text.

    With `skip_nulls`, NULL fields are left out (a JSON merge patch drops null members),
    so the destination keeps what it has for them."""
    nested: dict[str, Any] = {}
    for path, expr in tree.items():
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ProjectError(f"mapping: {'.'.join(path)} nests under a plain field")
        node[path[-1]] = expr
    built = _obj(nested, types, rules, top=True)
    return f"json_merge_patch('{{}}', {built})" if skip_nulls else built


def _obj(node: dict[str, Any], types: dict[str, str], rules: Rules, top: bool) -> str:
    args = []
    for key, val in node.items():
        if isinstance(val, dict):
            sql = _obj(val, types, rules, top=False)
        else:
            sql = _value(val, types, stringify=top and key in rules.as_string)
        args.append(f"{_str(key)}, {sql}")
    return f"json_object({', '.join(args)})"


def _value(expr: Expr, types: dict[str, str], stringify: bool) -> str:
    if isinstance(expr, Raw):
        return expr.sql
    if isinstance(expr, Literal):
        return f"{_str(json.dumps(expr.value))}::JSON"
    col, typ = quote(expr.name), types.get(expr.name, "")
    if stringify:
        return f"CAST({col} AS VARCHAR)"
    if typ.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"strftime({col} AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')"
    if typ.startswith("TIMESTAMP"):
        # Naive timestamps are taken as UTC, in ISO 8601 as the APIs expect.
        return f"strftime({col}, '%Y-%m-%dT%H:%M:%S.%gZ')"
    if typ == "DATE":
        return f"strftime({col}, '%Y-%m-%d')"
    return col


def _str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def columns_used(tree: Tree) -> set[str]:
    return {e.name for e in tree.values() if isinstance(e, Column)}
