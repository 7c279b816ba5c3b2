"""The asset factories: models/M, diffs/M and syncs/S with their checks.

No `from __future__ import annotations` here: Dagster reads the context annotation.
"""


from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    TableColumn,
    TableSchema,
    multi_asset,
)

from retl_assets.assets.resources import RetlDestinations, RetlSources, RetlStateStore
from retl_assets.assets.runtime import (
    ALLOW_MASS_DELETE_TAG,
    FULL_RESYNC_TAG,
    model_lease,
    run_started_at,
    tag_on,
)
from retl_assets.changeset.in_warehouse import (
    diff_in_warehouse,
    drop_orphans,
    stage_in_warehouse,
)
from retl_assets.changeset.local import DiffOptions, diff_and_commit
from retl_assets.errors import DestinationError, ModelError
from retl_assets.project import Project
from retl_assets.snapshot.extract import Limits, key_error, load_staged, stage
from retl_assets.state.files import remove
from retl_assets.state.store import IN_WAREHOUSE, Extract, Head, StateStore
from retl_assets.sync import run_sync

KEY_CHECKS = ("primary_key_present", "primary_key_not_null", "primary_key_unique")


def model_asset(project: Project, name: str, spec: AssetSpec) -> AssetsDefinition:
    model = project.models[name]
    checks = [AssetCheckSpec(c, asset=spec.key, blocking=True,
                             description=f"{c.replace('_', ' ')}: {', '.join(model.keys)}")
              for c in KEY_CHECKS]

    state_schema = project.config.sources[model.config.source].state_schema

    @multi_asset(specs=[spec], check_specs=checks, name=_op_name("model", name))
    def _model(context: AssetExecutionContext, retl_state: RetlStateStore,
               retl_sources: ResourceParam[RetlSources]) -> Iterator:
        with model_lease(context, retl_state.open(), name) as store:
            run_id = context.run.run_id
            _drop_superseded_extracts(store, name)
            head = store.head(name)
            last_sync_time = int(head.run_started_at or 0) if model.incremental else 0
            source = retl_sources.open(model.config.source)
            _same_mode(name, model.config.diff, head)
            sql = model.render_sql(last_sync_time)
            limits = Limits(model.config.max_rows, model.config.max_columns)
            if model.config.diff == "in_warehouse":
                with source.state_session(state_schema, name) as session:
                    # A new extract supersedes any not yet diffed; the committed stay.
                    drop_orphans(session, name, keep={
                        head.snapshot.removeprefix(IN_WAREHOUSE) if head.snapshot else "",
                        f"{name}__changeset_v{head.version}"})
                    staged = stage_in_warehouse(name, model.keys, session, sql, run_id, limits)
                file, preview = IN_WAREHOUSE + staged.table, None
            else:
                staged = stage(name, model.keys, source, sql, store.staged_path(name, run_id),
                               store.root / "tmp", limits)
                file = str(staged.path.relative_to(store.model_dir(name)))
                preview = MetadataValue.md(_preview(staged.path))
            report = staged.keys
            if report is None:  # stage() checks the keys of every extract it stages
                raise ModelError(f"models/{name}: the extract's keys were not checked")
            columns = [c for c, _ in staged.columns]
            message = None if report.ok else key_error(name, model.keys, report, columns)
            present = not report.missing_keys
            results = [
                AssetCheckResult(check_name="primary_key_present", passed=present,
                                 asset_key=spec.key, description=None if present else message),
                AssetCheckResult(check_name="primary_key_not_null",
                                 passed=present and not report.null_keys, asset_key=spec.key,
                                 metadata={"null_keys": report.null_keys}),
                AssetCheckResult(check_name="primary_key_unique",
                                 passed=present and not report.duplicate_keys,
                                 asset_key=spec.key,
                                 metadata={"duplicate_keys": report.duplicate_keys,
                                           "examples": ", ".join(report.duplicate_sample)}),
            ]
            if message:
                for r in results:
                    yield r
                if preview is not None:
                    remove(staged.path)
                raise ModelError(message)
            # Checked: from here on this extract is the one the next diff takes.
            store.write_pending_extract(name, Extract(run_id, file, staged.rows,
                                                      run_started_at(context)))
            context.log.info(f"model {name}: extracted {staged.rows} rows; diffs/{name} "
                             f"compares them with snapshot v{head.version}")
            yield MaterializeResult(
                asset_key=spec.key,
                metadata={
                    "dagster/row_count": staged.rows,
                    "rows": staged.rows,
                    "query_seconds": round(staged.query_seconds, 3),
                    "last_sync_time": last_sync_time,
                    "incremental": model.incremental,
                    "dagster/column_schema": TableSchema(
                        columns=[TableColumn(n, t) for n, t in staged.columns]),
                    "diff": model.config.diff,
                    **({"preview": preview} if preview is not None else {}),
                },
                check_results=results,
            )

    return _model


def diff_asset(project: Project, name: str, spec: AssetSpec) -> AssetsDefinition:
    model = project.models[name]

    state_schema = project.config.sources[model.config.source].state_schema

    @multi_asset(specs=[spec], name=_op_name("diff", name))
    def _diff(context: AssetExecutionContext, retl_state: RetlStateStore,
              retl_sources: ResourceParam[RetlSources]) -> Iterator:
        with model_lease(context, retl_state.open(), name) as store:
            # The newest checked extract, from this run or an earlier models/M-only one.
            extract = store.pending_extract(name)
            if extract is None:
                raise ModelError(_no_new_snapshot(name, store.head(name)))
            # The extracting run's start, not ours: {{last_sync_time}} must not skip the
            # rows that changed between the extract and this diff.
            options = DiffOptions(keep_columns=project.kept_columns(name),
                                  max_delete_fraction=model.config.max_delete_fraction,
                                  allow_mass_delete=tag_on(context, ALLOW_MASS_DELETE_TAG),
                                  incremental=model.incremental)
            partition = context.partition_key if context.has_partition_key else None
            if extract.file.startswith(IN_WAREHOUSE):
                need_full = tag_on(context, FULL_RESYNC_TAG) or any(
                    store.sync_state(s).cursor is None for s in project.syncs_of(name))
                source = retl_sources.open(model.config.source)
                with source.state_session(state_schema, name) as session:
                    changeset = diff_in_warehouse(
                        store, session, name, model.keys,
                        extract.file.removeprefix(IN_WAREHOUSE), extract.rows,
                        context.run.run_id, extract.run_started_at, options, need_full,
                        partition)
            else:
                changeset = diff_and_commit(
                    store, name, model.keys, load_staged(store.model_dir(name) / extract.file),
                    context.run.run_id, extract.run_started_at, options, partition=partition)
            store.clear_pending_extract(name)
            context.log.info(f"model {name}: {changeset.counts} (changeset {changeset.seq}, "
                             f"extracted by run {extract.run_id})")
            yield MaterializeResult(asset_key=spec.key, metadata={
                **changeset.counts,
                "rows": changeset.rows,
                "changeset": changeset.seq,
                "snapshot_version": changeset.version,
                "base_version": changeset.base_version,
                "extracted_by_run": extract.run_id,
            })

    return _diff


def sync_asset(project: Project, name: str, spec: AssetSpec) -> AssetsDefinition:
    config = project.config.syncs[name]
    dest_config = project.config.destinations[config.destination]

    @multi_asset(specs=[spec], name=_op_name("sync", name), pool=f"retl_{config.destination}")
    def _sync(context: AssetExecutionContext, retl_state: RetlStateStore,
              retl_destinations: ResourceParam[RetlDestinations]) -> Iterator:
        with model_lease(context, retl_state.open(), config.model) as store:
            destination = retl_destinations.open(config.destination)
            result = run_sync(project, store, name, destination,
                              full_resync=tag_on(context, FULL_RESYNC_TAG),
                              max_retries=dest_config.max_retries,
                              timeout_s=dest_config.timeout_s)
            context.log.info(
                f"sync {name}: sent {result.sent}, succeeded {result.succeeded}, "
                f"failed {result.failed}, unsent {result.unsent}, owed {result.owed} "
                f"in {result.seconds:.2f}s")
            yield MaterializeResult(asset_key=spec.key, metadata={
                "sent": result.sent,
                "succeeded": result.succeeded,
                "failed": result.failed,
                "rejected": result.rejected,
                "invalid": result.invalid,
                "unsent": result.unsent,
                "unconfirmed": result.unconfirmed,
                "skipped": result.skipped,
                "owed": result.owed,
                "by_operation": MetadataValue.json(result.by_operation),
                "resumed": result.resumed,
                "requests": result.requests,
                "retries": result.retries,
                "rate_limited": result.rate_limited,
                "duration_s": round(result.seconds, 3),
                "records_per_s": round(result.records_per_second, 1),
                "sample_payloads": MetadataValue.json(
                    [__import__("json").loads(s) for s in result.samples]),
                "errors": MetadataValue.md(_errors_md(result.errors)),
                "ledger": str(store.sync_dir(name)),
            })
            if result.unconfirmed:
                raise DestinationError(
                    f"sync {name!r}: {config.destination!r} did not confirm "
                    f"{result.unconfirmed} records it was sent; they are kept and will be "
                    f"sent again next run (first: {_first(result.errors, 'unconfirmed')})")
            if result.unsent:
                raise DestinationError(
                    f"sync {name!r}: {result.unsent} records could not be delivered to "
                    f"{config.destination!r} after every retry; they are kept and will be "
                    f"sent next run (first error: {result.errors[0][2] if result.errors else ''})"
                )

    return _sync


def _first(errors: list[tuple[str, str, str]], kind: str) -> str:
    return next((error for _, k, error in errors if k == kind), "")


def _drop_superseded_extracts(store: StateStore, name: str) -> None:
    """A new extract supersedes any not yet diffed: it holds the model's current rows (an
    incremental one reads from the same committed `last_sync_time`), so none is lost.
    The lease says no other run uses them."""
    store.clear_pending_extract(name)
    for old in (store.model_dir(name) / "staged").glob("*.parquet"):
        remove(old)


def _same_mode(name: str, diff: str, head: Head) -> None:
    if head.snapshot is None or head.snapshot.startswith(IN_WAREHOUSE) == (diff == "in_warehouse"):
        return
    kept = "in the warehouse" if head.snapshot.startswith(IN_WAREHOUSE) else "locally"
    raise ModelError(
        f"model {name!r}: its committed snapshot is kept {kept}, but the project file now "
        f"says `diff: {diff}`; nothing was run. Set the mode back, or start the model afresh "
        f"(remove models/{name} and its syncs' folders from the state store): every row is "
        f"then sent again as new")


def _no_new_snapshot(name: str, head: Head) -> str:
    base = f"snapshot v{head.version}" if head.version else "no snapshot yet"
    return (f"models/{name} has no new snapshot since the last diff (the base is {base}): "
            f"materialise models/{name} first (or both together)")


def _op_name(kind: str, name: str) -> str:
    return f"retl_{kind}__{name}"


def _preview(path, limit: int = 10) -> str:
    import duckdb

    from retl_assets.state.files import sql_path
    from retl_assets.state.store import FP

    try:
        rel = duckdb.sql(f"SELECT * EXCLUDE ({FP}) FROM read_parquet({sql_path(path)}) LIMIT {limit}")
        names, rows = rel.columns, rel.fetchall()
    except Exception as e:  # an enrichment: never fail the asset for it
        return f"(preview unavailable: {e})"
    head = "| " + " | ".join(names) + " |\n|" + "---|" * len(names) + "\n"
    return head + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in rows)


def _errors_md(errors: list[tuple[str, str, str]]) -> str:
    if not errors:
        return "no errors"
    lines = ["| key | kind | error |", "|---|---|---|"]
    lines += [f"| {k} | {kind} | {e.replace('|', '/')[:200]} |" for k, kind, e in errors]
    return "\n".join(lines)
