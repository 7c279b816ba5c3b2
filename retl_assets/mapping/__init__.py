"""Columns -> destination fields."""

from retl_assets.mapping.fields import (
    Column,
    Literal,
    Raw,
    Rules,
    Tree,
    columns_used,
    json_sql,
    plan,
)

__all__ = ["Column", "Literal", "Raw", "Rules", "Tree", "columns_used", "json_sql", "plan"]
