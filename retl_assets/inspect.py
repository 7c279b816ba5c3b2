"""Look at a project without syncing: validate queries and mappings, preview a model."""

from __future__ import annotations

from typing import Any

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
            checked.append(f"model {name}: {len(columns[name])} columns, key {', '.join(model.keys)}")
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
        where = f"{request.url.scheme}://{request.url.host}"
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
        return False, f"{name}: {where} refused the credentials (HTTP {status}); check the " \
                      f"secret's environment variable"
    if status == 429:
        return False, f"{name}: {where} is rate limiting (HTTP 429); could not check, try again"
    return False, f"{name}: {where} answered HTTP {status}: {response.text[:200]}"
