"""The run-time switch of a sync: `retl disable S` / `retl enable S`, or the `retl_switch` job
from the Launchpad (retl_assets.assets.switch_job). It lives in the state store (`syncs/S/switch.json`), not in code.

A switched-off sync's step sends nothing and leaves its cursor where it was, so every change
made meanwhile waits in the model's log and is delivered, once, by the first run after
`retl enable S`. The project file's `enabled: false` is the other way to switch a sync off
(the model's job then leaves it out); `is_enabled` answers for both.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from retl_assets.errors import ProjectError
from retl_assets.project import Project
from retl_assets.state.files import read_json, write_json
from retl_assets.state.store import StateStore


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


__all__ = ["Switch", "disabled_message", "is_enabled", "read_switch", "set_switch"]
