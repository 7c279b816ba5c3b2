"""Find, read and check the project file; every error names the entry and field."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from retl_assets.errors import ModelError, ProjectError
from retl_assets.project.query import QueryRefused, parse_read_only
from retl_assets.project.schema import (
    MIRROR,
    ModelConfig,
    ProjectConfig,
    Secret,
    SyncConfig,
)
from retl_assets.vendors import destination, source

DEMO_PROJECT = Path(__file__).resolve().parent.parent / "demo" / "retl.yaml"
LAST_SYNC_TIME = re.compile(r"\{\{\s*last_sync_time\s*\}\}")



@dataclass(frozen=True)
class Model:
    name: str
    config: ModelConfig
    sql: str  # the query text, `{{last_sync_time}}` not yet rendered
    dialect: str = "duckdb"  # sqlglot's name for its source's SQL

    @property
    def keys(self) -> list[str]:
        return self.config.keys

    @property
    def incremental(self) -> bool:
        return bool(LAST_SYNC_TIME.search(self.sql))

    def render_sql(self, last_sync_time: int) -> str:
        """The query to run; without a trailing `;`, so it can be wrapped in a subquery.
        Checked again here, before every run: the file may have changed since it loaded."""
        sql = _rendered(self.sql, last_sync_time)
        try:
            parse_read_only(sql, self.dialect)
        except QueryRefused as e:
            raise ModelError(f"model {self.name!r}: {e}; nothing was run") from None
        return sql


def _rendered(sql: str, last_sync_time: int) -> str:
    sql = LAST_SYNC_TIME.sub(str(int(last_sync_time)), sql).strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    return sql


@dataclass(frozen=True)
class Project:
    path: Path
    config: ProjectConfig
    models: dict[str, Model]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        env = os.environ.get("RETL_STATE_DIR")
        if env:
            return Path(env)
        return self.root / (self.config.state_dir or ".retl/state")

    def kept_columns(self, model: str) -> list[str] | None:
        """Columns the committed snapshot must keep for the model's `deleted` syncs (None: all)."""
        keep: set[str] = set()
        for sync in self.syncs_of(model).values():
            if "deleted" not in sync.selects:
                continue
            if sync.mapping is None or any(not isinstance(v, str) and hasattr(v, "template")
                                           for v in sync.mapping.values()):
                return None  # by name, or a template that may read any column
            keep |= {src for src in sync.mapping.values() if isinstance(src, str)}
            keep |= set((sync.match or {}).values())
        return sorted(keep)

    def syncs_of(self, model: str) -> dict[str, SyncConfig]:
        return {n: s for n, s in self.config.syncs.items() if s.model == model}


def project_path() -> Path:
    """`RETL_PROJECT` if set, else the bundled demo project."""
    env = os.environ.get("RETL_PROJECT")
    return Path(env).expanduser().resolve() if env else DEMO_PROJECT


def load_project(path: str | Path | None = None) -> Project:
    path = Path(path).expanduser().resolve() if path else project_path()
    if not path.exists():
        raise ProjectError(f"project file {path} does not exist (set RETL_PROJECT to its path)")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader) or {}
    except DuplicateKey as e:
        raise ProjectError(f"{path.name}: {e}") from None
    except yaml.YAMLError as e:
        raise ProjectError(f"{path.name}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ProjectError(f"{path.name}: the top level must be a mapping of sections")
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as e:
        raise ProjectError(f"{path.name}: " + _describe(e)) from None
    _check_sources(path, config)
    models = {name: _load_model(path, name, m, source(config.sources[m.source].type).dialect)
              for name, m in config.models.items()}
    _check_references(path, config, models)
    return Project(path=path, config=config, models=models)


class DuplicateKey(yaml.YAMLError):
    """A mapping names the same key twice; YAML would keep only the last silently."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in any mapping at any depth (a second
    sync of the same name would otherwise replace the first without a word)."""

    def construct_document(self, node):
        self._check_unique(node, [], set())
        return super().construct_document(node)

    def _check_unique(self, node, path: list[str], seen: set[int]) -> None:
        if id(node) in seen:  # an alias met again
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, [*path, f"[{i}]"], seen)
        if not isinstance(node, yaml.MappingNode):
            return
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: overriding is its point
                self._check_unique(value, path, seen)
                continue
            line = key.start_mark.line + 1
            where = ".".join([*path, key.value]).replace(".[", "[")
            if (key.tag, key.value) in first:
                raise DuplicateKey(f"{where} is given twice (lines {first[key.tag, key.value]} "
                                   f"and {line}); YAML would keep only the second: remove or "
                                   "rename one")
            first[key.tag, key.value] = line
            self._check_unique(value, [*path, key.value], seen)


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        # Drop pydantic's union-branch names (e.g. "DuckDBSource") from the location.
        loc = ".".join(str(p) for p in err["loc"] if not str(p)[:1].isupper() and "[" not in str(p))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (is it a typo?)"
        if loc == "destinations" and err["type"] == "value_error":
            # Each destination's own config already names the entry and field.
            lines += [f"{loc}.{part}" for part in msg.split("; ")]
            continue
        lines.append(f"{loc}: {msg}")
    return "; ".join(dict.fromkeys(lines))


def _check_sources(path: Path, config: ProjectConfig) -> None:
    for name, m in config.models.items():
        if m.source not in config.sources:
            raise ProjectError(
                f"{path.name}: models.{name}.source: no source named {m.source!r} "
                f"(sources: {', '.join(config.sources) or 'none'})"
            )


def _load_model(path: Path, name: str, m: ModelConfig, dialect: str) -> Model:
    """The model, its SQL proved one read-only query for its source's dialect."""
    where = f"{path.name}: models.{name}"
    if m.sql_file is None:
        model = Model(name, m, m.sql or "", dialect)
    else:
        sql_path = (path.parent / m.sql_file).resolve()
        if not sql_path.exists():
            raise ProjectError(f"{where}.sql_file: {m.sql_file} not found next to {path.name}")
        model = Model(name, m, sql_path.read_text(), dialect)
    if not model.sql.strip():
        raise ProjectError(f"{where}.sql is empty")
    try:
        parse_read_only(_rendered(model.sql, 0), dialect)
    except QueryRefused as e:
        raise ProjectError(f"{where}.{'sql_file' if m.sql_file else 'sql'}: {e}") from None
    changed = m.trigger.source_changed if m.trigger else None
    if changed and changed.fingerprint:
        try:
            parse_read_only(changed.fingerprint, dialect)
        except QueryRefused as e:
            raise ProjectError(f"{where}.trigger.source_changed.fingerprint: {e}") from None
    return model


# Sync modes users know from Census and drt: offered only where the vendor tells them apart.
MODES = {"create": "create-only (never touch an existing record)",
         "update": "update-only (never create a record)"}


def _check_references(path: Path, config: ProjectConfig, models: dict[str, Model]) -> None:
    where = path.name
    for name, s in config.sources.items():
        # Sync logs go through the same state-schema write path as `diff: in_warehouse`.
        if s.sync_logs is not None and not source(s.type).in_warehouse:
            raise ProjectError(f"{where}: sources.{name}.sync_logs: retl writes no table in "
                               f"a {s.type} warehouse; sync logs work on duckdb, postgres "
                               "and snowflake sources: remove `sync_logs` from this one")
    for name, m in config.models.items():
        changed = m.trigger.source_changed if m.trigger else None
        kind = config.sources[m.source].type
        if m.diff == "in_warehouse" and not source(kind).in_warehouse:
            raise ProjectError(f"{where}: models.{name}.diff: {kind} sources diff locally; "
                               "`in_warehouse` works on duckdb, postgres and snowflake")
        if m.diff == "in_warehouse" and len(name) > 40:
            raise ProjectError(f"{where}: models.{name}.diff: an in-warehouse model's name is "
                               "at most 40 characters: its state tables add up to 22 and "
                               "PostgreSQL cuts names at 63")
        if m.diff == "in_warehouse" and models[name].incremental:
            raise ProjectError(f"{where}: models.{name}.diff: an incremental model "
                               "({{last_sync_time}}) diffs locally; `in_warehouse` compares "
                               "whole snapshots")
        if changed and not changed.fingerprint and source(kind).change_marker is None:
            raise ProjectError(
                f"{where}: models.{name}.trigger.source_changed.fingerprint: {kind} cannot say "
                "when a table last changed; name a cheap query whose answer changes with the "
                "data, e.g. SELECT max(updated_at), count(*) FROM the table")
    for name, s in config.syncs.items():
        if s.alerts is not None and config.alerts is None:
            raise ProjectError(
                f"{where}: syncs.{name}.alerts: alerts need somewhere to go: add "
                "`alerts: {webhook: {env: NAME}}` at the top level of the project file")
        if s.model not in config.models:
            raise ProjectError(
                f"{where}: syncs.{name}.model: no model named {s.model!r} "
                f"(models: {', '.join(config.models)})"
            )
        if s.destination not in config.destinations:
            raise ProjectError(
                f"{where}: syncs.{name}.destination: no destination named {s.destination!r} "
                f"(destinations: {', '.join(config.destinations) or 'none'})"
            )
        kind = config.destinations[s.destination].type
        facts = destination(kind)
        offered = facts.actions
        if s.action in MODES and s.action not in offered:
            raise ProjectError(
                f"{where}: syncs.{name}.action: {kind} cannot tell a new record from an "
                f"existing one, so it offers no {MODES[s.action]} sync; it offers "
                f"{', '.join(offered)}")
        if s.action not in offered:
            raise ProjectError(
                f"{where}: syncs.{name}.action: {kind} offers {', '.join(offered)}, "
                f"not {s.action!r}"
            )
        if s.associations and not facts.associations:
            raise ProjectError(f"{where}: syncs.{name}.associations: {kind} has no associations "
                               f"between records (hubspot has)")
        if s.action == MIRROR and s.records is not None:
            raise ProjectError(f"{where}: syncs.{name}.records: `mirror` sends added, updated "
                               "and deleted rows; leave `records` out")
        if "deleted" in s.selects and s.action == MIRROR and models[s.model].incremental:
            raise ProjectError(f"{where}: syncs.{name}.action: model {s.model!r} is "
                               "incremental and never yields deletes; use `upsert`, not `mirror`")
        if s.records == "deleted" and models[s.model].incremental:
            raise ProjectError(
                f"{where}: syncs.{name}.records: model {s.model!r} is incremental "
                "(uses {{last_sync_time}}) and never yields deletes, so a `deleted` sync "
                "on it would never send anything"
            )


def resolve_secret(value: Secret | None, where: str) -> str | None:
    """The secret's value; `{env: NAME}` is read now and never stored or logged."""
    if value is None or isinstance(value, str):
        return value
    found = os.environ.get(value.env)  # the only other kind of Secret is an EnvRef
    if not found:
        raise ProjectError(f"{where}: environment variable {value.env} is not set")
    return found
