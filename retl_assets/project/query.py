"""What a model's SQL may be, and which tables it reads, decided by sqlglot's parser for the
source's dialect (never a regex): one read-only query, SELECT or WITH ... SELECT."""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

# Anything that writes, defines, moves data or runs code, wherever it sits in the tree
# (a data-modifying CTE is a DELETE inside a WITH).
_WRITES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name) for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable",
        "Copy", "Command", "Grant", "Revoke", "Set", "Use", "Transaction", "Commit",
        "Rollback", "Into", "Lock", "LoadData", "Analyze", "Refresh", "Cache", "Uncache",
        "Pragma", "Execute", "Call", "Export", "Attach", "Detach", "Install",
    ) if hasattr(exp, name))

_KIND = {  # the words a user knows, for the refusal
    "Insert": "INSERT", "Update": "UPDATE", "Delete": "DELETE", "Merge": "MERGE",
    "Create": "CREATE", "Drop": "DROP", "Alter": "ALTER", "TruncateTable": "TRUNCATE",
    "Copy": "COPY", "Into": "SELECT ... INTO", "Lock": "a locking clause (FOR UPDATE)",
    "Set": "SET", "Use": "USE", "Grant": "GRANT", "Revoke": "REVOKE",
}


# sqlglot warns when it falls back to a bare Command (CALL, EXPLAIN); we refuse those anyway.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


class QueryRefused(ValueError):
    """The model's SQL is not one read-only query; the message says what it is instead."""


def parse_read_only(sql: str, dialect: str) -> exp.Query:
    """The one read-only query `sql` is, or QueryRefused saying why not."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "cannot parse it"
        raise QueryRefused(f"its SQL does not parse as {dialect} SQL: {first}") from None
    if not statements:
        raise QueryRefused("its SQL is empty")
    if len(statements) > 1:
        raise QueryRefused(f"its SQL holds {len(statements)} statements; a model is one "
                           "SELECT (or WITH ... SELECT)")
    tree = statements[0]
    for node in tree.walk():
        if isinstance(node, _WRITES):
            name = type(node).__name__
            if isinstance(node, exp.Command):
                word = str(node.this).upper()
                raise QueryRefused(f"its SQL runs {word}, which retl cannot prove read-only; "
                                   "a model is one SELECT (or WITH ... SELECT)")
            raise QueryRefused(f"its SQL contains {_KIND.get(name, name.upper())}; a model "
                               "only reads: one SELECT (or WITH ... SELECT)")
    if not isinstance(tree, exp.Query):
        raise QueryRefused(f"its SQL is a {type(tree).__name__.upper()} statement, not a query; "
                           "a model is one SELECT (or WITH ... SELECT)")
    return tree


def tables_read(sql: str, dialect: str) -> list[str]:
    """The tables the query reads, as `db.schema.table` spelled in the SQL (CTEs left out),
    sorted."""
    tree = parse_read_only(sql, dialect)
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    found: dict[str, None] = {}
    for table in tree.find_all(exp.Table):
        if not table.name or isinstance(table.this, exp.Func):
            continue  # a table function (read_parquet(...), generate_series(...))
        if not table.db and table.name.lower() in ctes:
            continue
        found.setdefault(".".join(part.sql(dialect=dialect) for part in table.parts))
    return sorted(found)
