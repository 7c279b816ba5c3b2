"""The asset factories: models/M, diffs/M and syncs/S with their checks.

No `from __future__ import annotations` here: Dagster reads the context annotation.
"""


from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetObservation,
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
    retl_ops_in_run,
    retl_step,
    run_started_at,
    tag_on,
)
from retl_assets.changeset.in_warehouse import (
    diff_in_warehouse,
    drop_orphans,
    stage_in_warehouse,
)
from retl_assets.changeset.local import DiffOptions, diff_and_commit
from retl_assets.errors import DestinationError, MassDeleteError, ModelError, ProjectError
from retl_assets.project import Project
from retl_assets.project.schema import AlertRules
from retl_assets.redact import shown
from retl_assets.snapshot.extract import Limits, key_error, load_staged, stage
from retl_assets.state.compact import compact_log
from retl_assets.state.files import remove
from retl_assets.state.store import IN_WAREHOUSE, Extract, Head, StateStore
from retl_assets.switch import disabled_message, is_enabled
from retl_assets.sync import run_sync
from retl_assets.sync.logs import observers

KEY_CHECKS = ("primary_key_present", "primary_key_not_null", "primary_key_unique")
DELETE_CHECK = "max_delete_fraction"
OWED_CHECK, FAILURE_CHECK = "rows_owed", "failure_share"


def model_asset(project: Project, name: str, spec: AssetSpec) -> AssetsDefinition:
    model = project.models[name]
    # Partitioned like the asset, so each run records each check once, with its partition.
    checks = [_check_spec(c, asset=spec.key, blocking=True, partitions_def=spec.partitions_def,
                             description=f"{c.replace('_', ' ')}: {', '.join(model.keys)}")
              for c in KEY_CHECKS]
    samples = project.config.samples

    state_schema = project.config.sources[model.config.source].state_schema

    @multi_asset(specs=[spec], check_specs=checks, name=_op_name("model", name))
    def _model(context: AssetExecutionContext, retl_state: RetlStateStore,
               retl_sources: ResourceParam[RetlSources]) -> Iterator:
        with retl_step(context, retl_state.open(), project, name) as store:
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
                preview = _preview(staged.path, samples)
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
                                           "examples": ", ".join(map(str, shown(
                                               list(report.duplicate_sample), samples) or []))}),
            ]
            # Every enabled sync of this run must be able to send this extract.
            problem = message or _syncs_cannot_send(project, name, dict(staged.columns),
                                                    _syncs_in_run(context, project, name, store))
            if problem:
                for r in results:
                    yield r
                if model.config.diff != "in_warehouse":
                    remove(staged.path)
                raise (ModelError(message) if message else problem)
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

    delete_check = _check_spec(
        DELETE_CHECK, asset=spec.key, partitions_def=spec.partitions_def,
        description=f"the rows a run deletes, as a share of the committed snapshot, stay "
                    f"within max_delete_fraction {model.config.max_delete_fraction:.0%} "
                    f"(a run over it stops, unless allowed)")

    @multi_asset(specs=[spec], check_specs=[delete_check], name=_op_name("diff", name))
    def _diff(context: AssetExecutionContext, retl_state: RetlStateStore,
              retl_sources: ResourceParam[RetlSources]) -> Iterator:
        def _diff_extract(store, extract, options, partition):
            if extract.file.startswith(IN_WAREHOUSE):
                need_full = tag_on(context, FULL_RESYNC_TAG) or any(
                    store.needs_full(name, store.sync_state(s)) for s in project.syncs_of(name))
                source = retl_sources.open(model.config.source)
                with source.state_session(state_schema, name) as session:
                    return diff_in_warehouse(
                        store, session, name, model.keys,
                        extract.file.removeprefix(IN_WAREHOUSE), extract.rows,
                        context.run.run_id, extract.run_started_at, options, need_full,
                        partition)
            return diff_and_commit(
                store, name, model.keys, load_staged(store.model_dir(name) / extract.file),
                context.run.run_id, extract.run_started_at, options, partition=partition)

        with retl_step(context, retl_state.open(), project, name) as store:
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
            base_rows = store.head(name).rows
            try:
                changeset = _diff_extract(store, extract, options, partition)
            except MassDeleteError as e:  # the guard stopped it: say so on the check as well
                yield AssetCheckResult(check_name=DELETE_CHECK, asset_key=spec.key,
                                       passed=False, description=e.description)
                raise
            store.clear_pending_extract(name)
            context.log.info(f"model {name}: {changeset.counts} (changeset {changeset.seq}, "
                             f"extracted by run {extract.run_id})")
            deleted = changeset.counts.get("deleted", 0)
            share = deleted / base_rows if base_rows else 0.0
            yield MaterializeResult(asset_key=spec.key, metadata={
                **changeset.counts,
                "rows": changeset.rows,
                "changeset": changeset.seq,
                "snapshot_version": changeset.version,
                "base_version": changeset.base_version,
                "extracted_by_run": extract.run_id,
            }, check_results=[AssetCheckResult(
                check_name=DELETE_CHECK, asset_key=spec.key,
                passed=share <= model.config.max_delete_fraction or options.allow_mass_delete,
                metadata={"deleted": deleted, "base_rows": base_rows,
                          "delete_share": round(share, 4),
                          "max_delete_fraction": model.config.max_delete_fraction,
                          "allowed_by_tag": options.allow_mass_delete})])

    return _diff


def sync_asset(project: Project, name: str, spec: AssetSpec) -> AssetsDefinition:
    config = project.config.syncs[name]
    dest_config = project.config.destinations[config.destination]

    rules = config.alerts or (project.config.alerts.rules if project.config.alerts
                              else AlertRules())
    checks = _sync_check_specs(spec, rules)

    # Skippable: a switched-off sync materialises nothing (see retl_assets.switch), and its
    # checks then record no result (can_subset makes them optional).
    @multi_asset(specs=[spec.replace_attributes(skippable=True)], name=_op_name("sync", name),
                 pool=f"retl_{config.destination}", check_specs=checks, can_subset=True)
    def _sync(context: AssetExecutionContext, retl_state: RetlStateStore,
              retl_destinations: ResourceParam[RetlDestinations]) -> Iterator:
        on, why = is_enabled(project, retl_state.open(), name)
        if not on:  # nothing sent, the cursor stays: its changes wait in the model's log
            context.log.warning(disabled_message(name, why))
            yield AssetObservation(asset_key=spec.key, metadata={"disabled": why})
            return
        with retl_step(context, retl_state.open(), project, config.model) as store:
            destination = retl_destinations.open(config.destination)
            # Progress lines in the run's log; record outcomes for the warehouse's sync log.
            progress, observe, finish = observers(context, project, name, context.run.run_id)
            try:
                result = run_sync(project, store, name, destination,
                                  full_resync=tag_on(context, FULL_RESYNC_TAG),
                                  max_retries=dest_config.max_retries,
                                  timeout_s=dest_config.timeout_s,
                                  progress=progress, observe=observe)
            except Exception as stop:
                finish()
                # A run-level stop (dead destination, refused credentials or setup): the
                # Failure carries what it left owed, under the materialisation's names.
                from dagster import Failure

                from retl_assets.sync.run import stopped_result

                partial = stopped_result(stop)
                if partial is None:
                    raise

                raise Failure(description=getattr(stop, "description", None) or
                              f"sync {name!r} stopped: {type(stop).__name__}: {stop}",
                              metadata=partial.counts(),
                              allow_retries=getattr(stop, "transient", None) is not False
                              ) from stop
            log_meta = finish()
            # Changesets every sync of the model has now consumed are folded away.
            compact_log(store, config.model, project.syncs_of(config.model))
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
                **_sample_payloads(result.samples, project.config.samples),
                "errors": _errors_table(project, store, name, context),
                "ledger": str(store.sync_dir(name)),
                **log_meta,
            }, check_results=_sync_checks(spec, result, rules))
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


def _check_spec(name: str, **kwargs) -> AssetCheckSpec:
    """A check partitioned like its asset: each run records it once, with its partition.
    Dagster 1.13 calls a check's own partitions a preview; the warning would show at every
    load of the code location."""
    import warnings

    from dagster import PreviewWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(name, **kwargs)


def _sync_check_specs(spec: AssetSpec, rules: AlertRules) -> list[AssetCheckSpec]:
    limit = (f"at most {rules.max_rejected_share:.0%}" if rules.max_rejected_share is not None
             else "no limit set (alerts.max_rejected_share)")
    return [
        _check_spec(OWED_CHECK, asset=spec.key, partitions_def=spec.partitions_def,
                       description="no rows left owed to the destination after the run "
                                   "(they are retried next run)"),
        _check_spec(FAILURE_CHECK, asset=spec.key, partitions_def=spec.partitions_def,
                       description=f"records that failed, as a share of those tried: {limit}"),
    ]


def _sync_checks(spec: AssetSpec, result, rules: AlertRules) -> list[AssetCheckResult]:
    tried = result.succeeded + result.failed
    share = result.failed / tried if tried else 0.0
    limit = rules.max_rejected_share
    return [
        AssetCheckResult(check_name=OWED_CHECK, asset_key=spec.key, passed=result.owed == 0,
                         severity=AssetCheckSeverity.WARN,
                         metadata={"owed": result.owed, "unsent": result.unsent}),
        AssetCheckResult(check_name=FAILURE_CHECK, asset_key=spec.key,
                         passed=limit is None or share <= limit,
                         metadata={"failed": result.failed, "tried": tried,
                                   "failure_share": round(share, 4),
                                   **({"max_rejected_share": limit} if limit is not None
                                      else {})}),
    ]


def _sample_payloads(samples: list[str], mode: str) -> dict[str, MetadataValue]:
    """The sync's sample payloads, as `samples:` says: masked, full, or left out."""
    import json

    shown_payloads = shown([json.loads(p) for p in samples], mode)  # type: ignore[arg-type]
    return {} if shown_payloads is None else {"sample_payloads": MetadataValue.json(
        shown_payloads)}


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


def _preview(path, samples: str, limit: int = 10) -> MetadataValue | None:
    """The extract's first rows as a table, their values as `samples:` says (None: off)."""
    import duckdb

    from retl_assets.state.files import sql_path
    from retl_assets.state.store import FP

    if samples == "off":
        return None
    try:
        rel = duckdb.sql(f"SELECT * EXCLUDE ({FP}) FROM read_parquet({sql_path(path)}) LIMIT {limit}")
        names, types, rows = rel.columns, rel.types, rel.fetchall()
    except Exception as e:  # an enrichment: never fail the asset for it
        return MetadataValue.md(f"(preview unavailable: {e})")
    head = "| " + " | ".join(f"{n} ({t})" for n, t in zip(names, types)) + " |\n|"
    head += "---|" * len(names) + "\n"
    cells = [shown(list(r), samples) for r in rows]  # type: ignore[arg-type]
    return MetadataValue.md(head + "\n".join(
        "| " + " | ".join(str(v).replace("|", "/") for v in r) + " |" for r in cells))


def _syncs_in_run(context: AssetExecutionContext, project: Project, model: str,
                  store: StateStore) -> list[str]:
    """The syncs of `model` this run delivers: in the run's selection and switched on."""
    selected = retl_ops_in_run(context)["sync"]
    return [s for s in project.syncs_of(model)
            if s in selected and is_enabled(project, store, s)[0]]


def _syncs_cannot_send(project: Project, model: str, columns: dict[str, str],
                       syncs: list[str]) -> Exception | None:
    from retl_assets.assets.preflight import check_syncs

    try:
        check_syncs(project, model, columns, syncs)
    except ProjectError as e:
        return e
    return None


def _errors_table(project: Project, store: StateStore, name: str,
                  context: AssetExecutionContext) -> MetadataValue:
    """The rejected-rows table, read from the ledger the sync just committed. An enrichment:
    should it fail, the asset warns and goes on."""
    from retl_assets.rejects import rejects_table

    try:
        return rejects_table(project, store, name)
    except Exception as e:  # noqa: BLE001 (an enrichment: never fail the asset for it)
        context.log.warning(f"sync {name}: the rejected-rows table could not be read: {e}")
        return MetadataValue.md(f"(rejected-rows table unavailable: {e}; "
                                f"see `retl errors {name}`)")
