"""`{template: "{{ first_name }} {{ last_name }}"}` compiled to SQL, so it stays vectorised.

Jinja's own parser reads the template; text, columns and a few filters become a DuckDB
`concat`. A NULL column renders as empty text. Anything else is refused by name, at load.
"""

from __future__ import annotations

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError

FILTERS = {"upper": "upper({})", "lower": "lower({})", "trim": "trim({})",
           "title": "initcap({})", "string": "{}"}


def template_sql(text: str, columns: set[str], where: str) -> str:
    from retl_assets.errors import ProjectError
    from retl_assets.state.engine import quote

    try:
        tree = Environment().parse(text)
    except TemplateSyntaxError as e:
        raise ProjectError(f"{where}: template does not parse: {e.message}") from None

    def expr(node: nodes.Node) -> str:
        if isinstance(node, nodes.Name):
            if node.name not in columns:
                raise ProjectError(f"{where}: template uses {node.name!r}, which is not a "
                                   f"column (columns: {', '.join(sorted(columns))})")
            return f"coalesce(CAST({quote(node.name)} AS VARCHAR), '')"
        if isinstance(node, nodes.Const):
            return "'" + str(node.value).replace("'", "''") + "'"
        if isinstance(node, nodes.Filter) and node.name in FILTERS and node.node is not None:
            return FILTERS[node.name].format(expr(node.node))
        raise ProjectError(f"{where}: template uses {type(node).__name__.lower()} "
                           f"{getattr(node, 'name', '')!s}; supported: text, {{{{ column }}}} "
                           f"and the filters {', '.join(FILTERS)}")

    parts: list[str] = []
    for output in tree.body:
        if not isinstance(output, nodes.Output):
            raise ProjectError(f"{where}: template may hold only text and {{{{ column }}}}")
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append("'" + node.data.replace("'", "''") + "'")
            else:
                parts.append(expr(node))
    return f"concat({', '.join(parts)})" if parts else "''"
