"""`retl_dry_run`: a job to launch from the Launchpad, naming the sync in its run config
(`ops: {dry_run_sync: {config: {sync: contacts_identify}}}`).

It logs the dry run's report and records it as an AssetObservation of the sync's asset and
as the op's output metadata: it materialises nothing, commits nothing and sends nothing.
Sample payloads in that metadata follow the project's `samples:` (masked by default).

No `from __future__ import annotations` here: Dagster reads the op's annotations.
"""

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    JobDefinition,
    OpExecutionContext,
    Output,
    ResourceParam,
    job,
    op,
)
from pydantic import Field

from retl_assets.assets.resources import RetlDestinations, RetlSources, RetlStateStore
from retl_assets.errors import ProjectError
from retl_assets.project import Project

JOB = "retl_dry_run"
OP = "dry_run_sync"  # not the job's name: Dagster refuses an op and a job of one name


def dry_run_job(project: Project, sync_keys: dict[str, AssetKey]) -> JobDefinition:
    """The dry-run job; `sync_keys`: each sync's asset key (a translator may rename them)."""
    names = ", ".join(project.config.syncs) or "none"

    class DryRunConfig(Config):
        sync: str = Field(description=f"the sync to try (syncs: {names})")
        samples: int = Field(3, description="sample payloads to show")

    @op(name=OP, description="What a sync's next run would send; sends and commits nothing")
    def _dry_run(context: OpExecutionContext, config: DryRunConfig, retl_state: RetlStateStore,
                 retl_sources: ResourceParam[RetlSources],
                 retl_destinations: ResourceParam[RetlDestinations]):
        from retl_assets.dryrun import dry_run

        sync = project.config.syncs.get(config.sync)
        if sync is None:
            raise ProjectError(f"{JOB}: no sync named {config.sync!r} (syncs: {names})")
        model = project.models[sync.model]
        report = dry_run(project, retl_state.open(), config.sync,
                         retl_sources.open(model.config.source),
                         retl_destinations.open(sync.destination), samples=config.samples)
        context.log.info(report.text(project.config.samples))
        metadata = report.metadata(project.config.samples)
        key = sync_keys.get(config.sync)
        if key is not None:
            context.log_event(AssetObservation(asset_key=key, metadata=metadata,
                                               description="dry run: nothing was sent"))
        return Output(None, metadata=metadata)

    @job(name=JOB, description="Dry run of one sync: name it in the op's config (sync: ...)",
         tags={"retl/dry_run": "true"})
    def _job():
        _dry_run()

    return _job
