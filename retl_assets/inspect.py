"""Look at a project without syncing: validate queries and mappings, preview a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from retl_assets.destinations import open_destination
from retl_assets.errors import RetlError, SourceError
from retl_assets.mapping import plan
from retl_assets.project import Project, load_project
from retl_assets.project.query import tables_read
from retl_assets.sources import open_source
from retl_assets.sources import preview as first_rows
from retl_assets.state.store import PREFIX, StateStore


def _query(project: Project, model: str, limit: int) -> tuple[list[dict[str, str]], list[dict]]:
    m = project.models[model]
    head = StateStore(project.state_dir).head(model)
    sql = m.render_sql(int(head.run_started_at or 0) if m.incremental else 0)
    try:
        table = first_rows(open_source(project, m.config.source), sql, limit)
    except SourceError as e:
        raise SourceError(f"model {model!r}: {e.description}") from None
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    return columns, table.to_pylist()


def tables_of(project: Project, source: str) -> list[str]:
    """The tables the models on `source` read, as their SQL names them."""
    found: dict[str, None] = {}
    for model in project.models.values():
        if model.config.source == source:
            found.update(dict.fromkeys(tables_read(model.render_sql(0), model.dialect)))
    return list(found)


def preview(model: str, limit: int = 10) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    project = load_project()
    if model not in project.models:
        raise RetlError(f"no model named {model!r} (models: {', '.join(project.models)})")
    return _query(project, model, limit)


@dataclass(frozen=True)
class KeyCounts:
    rows: int
    keys: int  # distinct keys, NULL ones included
    null_rows: int  # rows with a NULL in any key column
    duplicated: int  # keys (not NULL) that more than one row holds
    examples: list[str]  # a few of those keys

    @property
    def ok(self) -> bool:
        return not self.null_rows and not self.duplicated

    def problem(self, model: str, keys: list[str]) -> str:
        parts = []
        if self.null_rows:
            parts.append(f"{self.null_rows} rows have a NULL key")
        if self.duplicated:
            parts.append(f"{self.duplicated} keys are held by more than one row (e.g. "
                         f"{', '.join(self.examples)})")
        return (f"models.{model}.primary_key: {', '.join(keys)} must be present and unique; of "
                f"{self.rows} rows, {'; '.join(parts)}: `retl sync` would refuse this extract. "
                f"Fix the query (filter NULLs, deduplicate) or choose another key")


def key_counts(project: Project, model: str, examples: int = 5) -> KeyCounts:
    """Rows, distinct keys, NULL keys and a few duplicated keys, in one read-only query."""
    m = project.models[model]
    keys = [exp.to_identifier(k, quoted=True).sql(dialect=m.dialect) for k in m.keys]
    cols, null = ", ".join(keys), " OR ".join(f"{k} IS NULL" for k in keys)
    sql = m.render_sql(0)
    count = (f"WITH retl_keys AS (SELECT {cols}, COUNT(*) AS retl_n FROM (\n{sql}\n) AS retl_m "
             f"GROUP BY {cols}), retl_totals AS (SELECT SUM(retl_n) AS retl_rows, COUNT(*) AS "
             f"retl_distinct, SUM(CASE WHEN {null} THEN retl_n ELSE 0 END) AS retl_nulls, "
             f"SUM(CASE WHEN retl_n > 1 AND NOT ({null}) THEN 1 ELSE 0 END) AS retl_dups "
             f"FROM retl_keys) "
             f"SELECT retl_totals.*, retl_ex.* FROM retl_totals LEFT JOIN (SELECT {cols} FROM "
             f"retl_keys WHERE retl_n > 1 AND NOT ({null}) ORDER BY retl_n DESC LIMIT "
             f"{int(examples)}) AS retl_ex ON 1 = 1")
    try:
        with open_source(project, m.config.source).stream(count) as reader:
            rows = reader.read_all().to_pylist()
    except SourceError as e:
        raise SourceError(f"model {model!r}: counting its keys failed: {e.description}") from None
    # By position: warehouses differ in the case they give the aliases.
    values = [list(r.values()) for r in rows]
    if not values:
        return KeyCounts(0, 0, 0, 0, [])
    total, distinct, nulls, dups = (int(v or 0) for v in values[0][:4])
    found = [", ".join(str(v) for v in r[4:]) for r in values if dups and r[4] is not None]
    return KeyCounts(total, distinct, nulls, dups, found)


def validate() -> tuple[list[str], list[str]]:
    """(problems, what was checked): the file, each query's columns and keys, each mapping."""
    project = load_project()
    problems: list[str] = []
    checked: list[str] = [f"project file {project.path}"]
    columns: dict[str, dict[str, str]] = {}
    for name, model in project.models.items():
        try:
            cols, _ = _query(project, name, 0)
        except RetlError as e:
            problems.append(str(e))  # names the model
            continue
        columns[name] = {c["name"]: c["type"] for c in cols}
        missing = [k for k in model.keys if k not in columns[name]]
        reserved = [c for c in columns[name] if c.startswith(PREFIX)]
        if missing:
            problems.append(f"models.{name}.primary_key: {', '.join(missing)} not in the query's "
                            f"columns ({', '.join(columns[name])})")
        elif reserved:
            problems.append(f"models.{name}: reserved column names {', '.join(reserved)}")
        else:
            try:
                counts = key_counts(project, name)
            except RetlError as e:
                problems.append(str(e))
                continue
            if counts.ok:
                checked.append(f"model {name}: {len(columns[name])} columns, key "
                               f"{', '.join(model.keys)}: {counts.rows} rows, every key present "
                               f"and unique (one count query)")
            else:
                problems.append(counts.problem(name, model.keys))
    for name, sync in project.config.syncs.items():
        if sync.model not in columns:
            continue
        try:
            writer = open_destination(project, sync.destination).writer(name, sync)
            for operation in set(writer.operations().values()):
                plan(name, sync, sync.model, columns[sync.model], writer.rules(operation))
        except RetlError as e:
            problems.append(str(e))
            continue
        checked.append(f"sync {name}: {sync.action} {' + '.join(writer.operations())} -> "
                       f"{sync.destination}")
    return problems, checked


def test_connection(name: str) -> tuple[bool, str]:
    """A source: connect and read zero rows of each table its models read. A destination:
    the vendor's cheapest read-only call. Either way, what the answer means in plain words."""
    project = load_project()
    if name in project.config.sources:
        check = open_source(project, name).check(tables_of(project, name))
        return check.ok, check.message
    if name not in project.config.destinations:
        raise RetlError(f"no source or destination named {name!r} "
                        f"(sources: {', '.join(project.config.sources)}; "
                        f"destinations: {', '.join(project.config.destinations) or 'none'})")
    return _test_destination(project, name)


def _test_destination(project: Project, name: str) -> tuple[bool, str]:
    import httpx

    dest = open_destination(project, name)
    with httpx.Client(timeout=15) as client:
        request = dest.check_request(client)
        where = endpoint(request.url)
        try:
            response = client.send(request)
        except httpx.TransportError as e:
            return False, f"{name}: cannot reach {where}: {type(e).__name__}"
    particular = getattr(dest, "check_answer", None)
    meaning = particular(response) if particular else None
    if meaning is not None:
        ok, what = meaning
        return ok, f"{name}: {what}"
    status = response.status_code
    if 200 <= status < 300:
        return True, f"{name}: credentials accepted by {where}"
    if status in (401, 403):
        return False, (f"{name}: {where} refused the credentials (HTTP {status}); check the "
                       f"secret's environment variable")
    if status == 429:
        return False, f"{name}: {where} is rate limiting (HTTP 429); could not check, try again"
    return False, f"{name}: {where} answered HTTP {status}: {response.text[:200]}"


def endpoint(url) -> str:
    """scheme://host:port of a URL, for messages: the port says which server, and the path
    and query string (which may carry a key) stay out."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"
