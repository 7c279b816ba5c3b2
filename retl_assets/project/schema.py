"""The project file as typed data: sources, destinations, models, syncs.

Every model forbids unknown fields, so a typo in the file is an error that names it.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
RECORDS = ("added", "updated", "added_or_updated", "deleted")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvRef(Strict):
    """A secret read from the environment when it is used, never stored."""

    env: str


Secret = Union[str, EnvRef]


# ---------------------------------------------------------------- sources


class SyncLogs(Strict):
    """Each run's record-level outcomes, kept in a table of the source's warehouse."""

    table: str = Field("retl_sync_log", description="in the source's `state_schema`")
    retention_days: int = Field(30, ge=1, description="older outcomes are deleted")


class SourceBase(Strict):
    """What every source takes; each source folder's config adds its own fields."""

    type: str
    state_schema: str = Field("retl_state", description="where `diff: in_warehouse` models "
                                                        "keep their snapshots, in the warehouse")
    sync_logs: SyncLogs | None = Field(
        None, description="write each run's record outcomes (key, operation, status, error, "
                          "run id, time) to a table in this warehouse; off by default")


# ----------------------------------------------------------- destinations


class DestinationBase(Strict):
    """What every destination takes; each destination module adds its own fields."""

    type: str
    base_url: str | None = Field(None, description="default: the vendor's endpoint")
    max_concurrency: int | None = Field(None, ge=1, le=64, description="default: the vendor's")
    batch_size: int | None = Field(None, ge=1, description="records per request (at most the vendor's)")
    max_retries: int = Field(6, ge=0, le=20)
    timeout_s: float = Field(30.0, gt=0)
    rate_limit: str | None = Field(
        None, description='"N/SECONDS" replaces the vendor\'s published limit (your plan\'s own), '
                          '"off" lifts it (local emulators, private endpoints)')

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None or value == "off":
            return value
        n, _, seconds = value.partition("/")
        try:
            if int(n) > 0 and float(seconds or 1) > 0:
                return value
        except ValueError:
            pass
        raise ValueError(f'rate_limit {value!r}: use "N/SECONDS" (e.g. "100/10") or "off"')

    def rate_override(self) -> tuple[int, float] | None | str:
        """None: keep the vendor's; "off": no limit; else (requests, seconds)."""
        if self.rate_limit in (None, "off"):
            return self.rate_limit
        n, _, seconds = self.rate_limit.partition("/")
        return int(n), float(seconds or 1)


# ------------------------------------------------------------------ models


class Schedule(Strict):
    """`{every: 15m}`, `{cron: "0 9 * * 1-5"}` or `{days: [mon, thu], at: "09:00"}`."""

    every: str | None = None
    cron: str | None = None
    days: list[str] | None = None
    at: str | None = None
    timezone: str = "UTC"
    start: str = Field("2026-01-01", description="first partition (date)")

    @model_validator(mode="after")
    def _one_form(self) -> Schedule:
        forms = [self.every is not None, self.cron is not None, self.days is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of `every`, `cron` or `days` (with `at`)")
        if self.at is not None and self.days is None:
            raise ValueError("`at` goes with `days`")
        self.to_cron()  # raises ValueError with the reason
        return self

    def to_cron(self) -> str:
        if self.cron is not None:
            if len(self.cron.split()) != 5:
                raise ValueError(f"cron {self.cron!r} must have five fields")
            return self.cron
        if self.every is not None:
            return _every_to_cron(self.every)
        days = [d.lower()[:3] for d in self.days or []]
        bad = [d for d in days if d not in DAYS]
        if bad or not days:
            raise ValueError(f"days must be among {', '.join(DAYS)}; got {self.days}")
        hour, minute = _parse_at(self.at or "00:00")
        return f"{minute} {hour} * * {','.join(str(DAYS.index(d)) for d in days)}"


def _every_to_cron(every: str) -> str:
    m = re.fullmatch(r"\s*(\d+)\s*(m|min|h|d)\s*", every)
    if not m:
        raise ValueError(f"every {every!r}: use minutes, hours or days, like 15m, 2h, 1d")
    n, unit = int(m.group(1)), m.group(2)
    if unit in ("m", "min") and n in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30):
        return "* * * * *" if n == 1 else f"*/{n} * * * *"
    if unit in ("m", "min") and n == 60 or unit == "h" and n == 1:
        return "0 * * * *"
    if unit == "h" and n in (2, 3, 4, 6, 8, 12):
        return f"0 */{n} * * *"
    if unit == "d" and n == 1 or unit == "h" and n == 24:
        return "0 0 * * *"
    raise ValueError(f"every {every!r}: must divide an hour or a day evenly (1m … 1d)")


def _parse_at(at: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", at.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"at {at!r}: use HH:MM")
    return int(m.group(1)), int(m.group(2))


class SourceChanged(Strict):
    """Ask the warehouse every `every` whether the tables the model reads changed."""

    every: str = "1m"
    fingerprint: str | None = Field(
        None, description="a cheap read-only query whose answer changes when the data does, "
                          "e.g. SELECT max(updated_at), count(*) FROM contacts; required where "
                          "the warehouse cannot say when a table last changed")

    @field_validator("every")
    @classmethod
    def _interval(cls, every: str) -> str:
        interval_seconds(every)  # raises ValueError with the reason
        return every

    @property
    def seconds(self) -> int:
        return interval_seconds(self.every)


def interval_seconds(every: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(s|m|min|h)\s*", every)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"every {every!r}: use seconds, minutes or hours, like 30s, 1m, 2h")
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
    if seconds < 30:
        raise ValueError(f"every {every!r}: at least 30s (each check is a warehouse query)")
    return seconds


class Trigger(Strict):
    """Run the model when an upstream Dagster asset materialises (`asset`), or when the
    tables its SQL reads change in the warehouse (`source_changed`)."""

    asset: str | list[str] | None = None
    source_changed: SourceChanged | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        if (self.asset is None) == (self.source_changed is None):
            raise ValueError("give exactly one of `asset` or `source_changed`")
        return self

    def asset_path(self) -> list[str]:
        if self.asset is None:
            raise ValueError("this trigger watches the source, not an asset")
        return self.asset.split("/") if isinstance(self.asset, str) else list(self.asset)


class ModelConfig(Strict):
    source: str
    primary_key: str | list[str]
    sql: str | None = None
    sql_file: str | None = Field(None, description="a .sql file, relative to the project file")
    schedule: Schedule | None = None
    trigger: Trigger | None = None
    max_delete_fraction: float = Field(0.5, ge=0, le=1)
    diff: Literal["local", "in_warehouse"] = Field(
        "local", description="in_warehouse: the snapshot stays in the source's state schema "
                             "and only changed rows leave the warehouse")
    max_rows: int = Field(40_000_000, ge=1, description="stop a run whose query returns more")
    max_columns: int = Field(300, ge=1, description="stop a run whose query returns more")
    description: str | None = None
    owners: list[str] = Field(default_factory=list, description="emails or team:NAME, "
                                                               "shown on the model's assets")

    @model_validator(mode="after")
    def _one_query(self) -> ModelConfig:
        if (self.sql is None) == (self.sql_file is None):
            raise ValueError("give exactly one of `sql` or `sql_file`")
        return self

    @property
    def keys(self) -> list[str]:
        return [self.primary_key] if isinstance(self.primary_key, str) else list(self.primary_key)


# ------------------------------------------------------------------- syncs


class AlertRules(Strict):
    """When a sync is in violation. Each rule alerts once when it starts and once on recovery."""

    on_failure: bool = Field(True, description="a failed run of the sync")
    max_rejected_share: float | None = Field(
        0.05, ge=0, le=1, description="failed records / records the run tried")
    max_runtime: str | None = Field(None, description="e.g. 30m, 2h: the sync step's duration")
    row_deviation: float | None = Field(
        None, gt=0, description="e.g. 0.5: alert when the records a run takes differ by more "
                                "than 50% from the median of the last `lookback` runs")
    lookback: int = Field(5, ge=2, le=100)

    @field_validator("max_runtime")
    @classmethod
    def _runtime(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value

    @property
    def max_runtime_s(self) -> int | None:
        return duration_seconds(self.max_runtime) if self.max_runtime else None


def duration_seconds(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(s|m|min|h|d)\s*", text)
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r}: use seconds, minutes, hours or days, like 90s, 30m, 2h")
    return int(m.group(1)) * {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]


class Alerts(Strict):
    """Where alerts go, and the rules every sync follows unless it sets its own."""

    webhook: Secret = Field(description="a Slack-compatible incoming webhook URL (it is a "
                                        "secret: give it as {env: NAME})")
    rules: AlertRules = Field(default_factory=AlertRules)


class Constant(Strict):
    value: Any


class Template(Strict):
    """Jinja text over the row's columns, e.g. "{{ first_name }} {{ last_name }}"."""

    template: str


FieldSource = Union[str, Constant, Template]
MIRROR = "mirror"  # upsert added and updated rows, delete deleted ones


class SyncConfig(Strict):
    model: str
    destination: str
    action: str
    records: Literal["added", "updated", "added_or_updated", "deleted"] | None = None
    object: str | None = Field(None, description="the destination's object, e.g. contacts")
    match: dict[str, str] | None = Field(None, description="destination field: model column")
    mapping: dict[str, FieldSource] | None = None
    associations: dict[str, dict[str, str]] | None = Field(
        None, description="link each record to another object's record: "
                          "{object: {its unique field: model column}}, e.g. "
                          "{companies: {domain: company_domain}}")
    skip_nulls: bool = Field(False, description="a NULL column leaves the field untouched")
    on_invalid: Literal["reject", "skip"] = "reject"
    enabled: bool = Field(True, description="false: the model's job leaves the sync out; its "
                                            "changes wait and are sent when it is enabled")
    description: str | None = None
    owners: list[str] = Field(default_factory=list, description="emails or team:NAME; "
                                                               "default: the model's")
    alerts: AlertRules | None = Field(None, description="this sync's own alert thresholds")

    @property
    def selects(self) -> tuple[str, ...]:
        """Which changes the sync takes."""
        if self.action == MIRROR:
            return ("added", "updated", "deleted")
        return {"added": ("added",), "updated": ("updated",), "deleted": ("deleted",)}.get(
            self.records or "", ("added", "updated"))

    @field_validator("associations")
    @classmethod
    def _one_match_each(cls, associations: dict[str, dict[str, str]] | None):
        for obj, match in (associations or {}).items():
            if len(match) != 1:
                raise ValueError(f"associations.{obj}: give one unique field of {obj} and the "
                                 f"model column holding its value, e.g. {{domain: company_domain}}")
        return associations

    @field_validator("mapping")
    @classmethod
    def _paths(cls, mapping: dict[str, FieldSource] | None) -> dict[str, FieldSource] | None:
        for path in mapping or {}:
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"mapping field {path!r} is not a valid (dotted) field name")
        return mapping


class ProjectConfig(Strict):
    sources: dict[str, SourceBase]
    destinations: dict[str, DestinationBase] = Field(default_factory=dict)
    models: dict[str, ModelConfig]
    syncs: dict[str, SyncConfig] = Field(default_factory=dict)
    state_dir: str | None = Field(None, description="state store; default .retl/state")
    samples: Literal["redacted", "full", "off"] = Field(
        "redacted", description="sample payloads and previews in Dagster's event log: values "
                                "masked (default), shown as they are, or left out")
    alerts: Alerts | None = None

    @field_validator("sources", "destinations", "models", "syncs", mode="before")
    @classmethod
    def _names(cls, entries: Any) -> Any:
        for name in entries if isinstance(entries, dict) else {}:
            if not NAME.match(str(name)):
                raise ValueError(f"name {name!r} must be letters, digits and underscores")
        return entries

    @field_validator("destinations", mode="before")
    @classmethod
    def _destination_types(cls, entries: Any) -> Any:
        """Each destination is validated by the config its own folder declares."""
        from retl_assets.vendors import destination, destination_types

        return _by_type(entries, "destination", destination, destination_types)

    @field_validator("sources", mode="before")
    @classmethod
    def _source_types(cls, entries: Any) -> Any:
        """Each source is validated by the config its own folder declares."""
        from retl_assets.vendors import source, source_types

        return _by_type(entries, "source", source, source_types)


def _by_type(entries: Any, what: str, facts_of, types) -> Any:
    if not isinstance(entries, dict):
        return entries
    out = {}
    for name, raw in entries.items():
        kind = raw.get("type") if isinstance(raw, dict) else None
        facts = facts_of(kind)
        if facts is None:
            raise ValueError(f"{name}.type: unknown {what} type {kind!r} "
                             f"({what} types: {', '.join(types())})")
        try:
            out[name] = facts.config.model_validate(raw)
        except ValidationError as e:
            raise ValueError("; ".join(
                f"{name}.{'.'.join(str(p) for p in err['loc'])}: "
                + ("unknown field (is it a typo?)" if err["type"] == "extra_forbidden"
                   else err["msg"].removeprefix("Value error, "))
                for err in e.errors())) from None
    return out
