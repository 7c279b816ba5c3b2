"""`retl_switch`: switch a sync off or on from the UI's Launchpad, as `retl disable|enable`
does on the command line (the switch itself: retl_assets.switch).

No `from __future__ import annotations` here: Dagster reads the op's config annotation.
"""

from dagster import Config, OpExecutionContext, job, op

from retl_assets.assets.resources import RetlStateStore
from retl_assets.project import Project
from retl_assets.switch import is_enabled, set_switch

SWITCH_JOB = "retl_switch"


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
