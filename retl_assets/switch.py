"""The run-time switch of a sync: `retl disable S` / `retl enable S`, or the `retl_switch` job
from the Launchpad. It lives in the state store (`syncs/S/switch.json`), not in code.

A switched-off sync's step sends nothing and leaves its cursor where it was, so every change
made meanwhile waits in the model's log and is delivered, once, by the first run after
`retl enable S`. The project file's `enabled: false` is the other way to switch a sync off
(the model's job then leaves it out); `is_enabled` answers for both.

No `from __future__ import annotations` here: Dagster reads the op's config annotation.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from dagster import Config, OpExecutionContext, job, op

from retl_assets.assets.resources import RetlStateStore
from retl_assets.errors import ProjectError
from retl_assets.project import Project
from retl_assets.state.files import read_json, write_json
from retl_assets.state.store import StateStore

SWITCH_JOB = "retl_switch"


@dataclass(frozen=True)
class Switch:
    enabled: bool = True
    since: str | None = None  # ISO time it was flipped
    reason: str | None = None
    by: str | None = None  # "retl disable" or the Dagster run that flipped it


def read_switch(store: StateStore, sync: str) -> Switch:
    return Switch(**read_json(store.sync_dir(sync) / "switch.json", {}))


def set_switch(project: Project, store: StateStore, sync: str, enabled: bool,
               reason: str | None = None, by: str = "retl") -> Switch:
    """Flip the switch atomically; the sync's cursor and ledger are left as they are."""
    if sync not in project.config.syncs:
        raise ProjectError(f"no sync named {sync!r} (syncs: "
                           f"{', '.join(project.config.syncs) or 'none'})")
    switch = Switch(enabled, datetime.now(UTC).isoformat(timespec="seconds"),
                    reason or None, by)
    write_json(store.sync_dir(sync) / "switch.json", asdict(switch))
    return switch


def is_enabled(project: Project, store: StateStore, sync: str) -> tuple[bool, str]:
    """(enabled, why) for `retl status` and the sync's step; the why reads after
    "sync S is disabled (...)" or "sync S is enabled (...)"."""
    if not project.config.syncs[sync].enabled:
        return False, (f"`enabled: false` in {project.path.name}; set it to true to resume")
    switch = read_switch(store, sync)
    if not switch.enabled:
        why = f"since {switch.since}, reason: {switch.reason or 'none given'}"
        return False, why + (f", by {switch.by}" if switch.by else "")
    return True, (f"switched on since {switch.since}" if switch.since else "never switched off")


def disabled_message(sync: str, why: str) -> str:
    return f"sync {sync} is disabled ({why}): its changes wait; `retl enable {sync}` resumes"


class SwitchConfig(Config):
    """Which sync, on or off, and why (shown by `retl status` and in the sync's step log)."""

    sync: str
    enabled: bool
    reason: str = ""


def switch_job(project: Project):
    """A job to launch from the UI's Launchpad: `{ops: {retl_switch_sync: {config: {sync: S,
    enabled: false, reason: ...}}}}`."""

    @op(name="retl_switch_sync", description="Switch a retl sync on or off")
    def retl_switch_sync(context: OpExecutionContext, config: SwitchConfig,
                         retl_state: RetlStateStore) -> None:
        store = retl_state.open()
        set_switch(project, store, config.sync, config.enabled, config.reason,
                   by=f"run {context.run.run_id}")
        _, why = is_enabled(project, store, config.sync)
        state = "enabled" if config.enabled else "disabled"
        context.log.info(f"sync {config.sync} is {state} ({why})")

    @job(name=SWITCH_JOB, description="Switch a retl sync off (its changes wait) or on "
                                      "(it catches up on its next run)",
         tags={"retl/kind": "switch"})
    def retl_switch():
        retl_switch_sync()

    return retl_switch


__all__ = ["SWITCH_JOB", "Switch", "disabled_message", "is_enabled", "read_switch",
           "set_switch", "switch_job"]
