"""Conversions of mapped values that several vendors need, as SQL."""

from __future__ import annotations

from typing import Literal as TypingLiteral

from retl_assets.mapping.fields import Expr, Literal, Raw
from retl_assets.state.engine import quote


def sql_of(expr: Expr) -> str:
    """The SQL of one mapped value, as mapping.json_sql would read it before encoding."""
    if isinstance(expr, Raw):
        return expr.sql
    if isinstance(expr, Literal):
        if isinstance(expr.value, bool) or expr.value is None:
            return "NULL" if expr.value is None else str(expr.value).upper()
        if isinstance(expr.value, int | float):
            return repr(expr.value)
        return "'" + str(expr.value).replace("'", "''") + "'"
    return quote(expr.name)


def epoch_sql(value: str, unit: TypingLiteral["ms", "s"]) -> str:
    """Any timestamp-like value as an integer epoch (NULL when it is none), whatever its type:
    TIMESTAMP (taken as UTC), TIMESTAMPTZ, DATE, ISO text, or a number already in seconds or
    milliseconds. Text with an offset is read with it; without one, as UTC."""
    v = f"CAST(({value}) AS VARCHAR)"
    n = f"try_cast({v} AS DOUBLE)"
    offset = r"':[0-9]{2}(\.[0-9]+)?\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)$'"
    ms = (f"CASE WHEN {n} IS NOT NULL THEN CASE WHEN abs({n}) >= 1e11 THEN {n} ELSE {n} * 1000 END "
          f"WHEN regexp_matches({v}, {offset}) THEN epoch_ms(try_cast({v} AS TIMESTAMPTZ)) "
          f"ELSE epoch_ms(try_cast({v} AS TIMESTAMP)) END")
    if unit == "ms":
        return f"CAST(round({ms}) AS BIGINT)"
    return f"CAST(floor(({ms}) / 1000) AS BIGINT)"
