"""Alerts: post to the project's webhook once when a sync first breaks a rule, once when it
recovers.

One sensor, `retl_alerts`, reads the instance's run-status changes (successes and failures,
in the order they happened, from any job: the models' jobs, `__ASSET_JOB` runs from the UI,
`retl sync`) and, for each run that planned a retl sync, judges the sync's rules:

    on_failure          the run failed and the sync's step did not succeed
    max_rejected_share  failed / (succeeded + failed) of the sync's materialisation
    max_runtime         the step's `duration_s` (or its step timing)
    row_deviation       records sent vs the median of the sync's last `lookback` runs

Which rule of which sync is in violation lives in the sensor's cursor, so a second failing
run posts nothing and the first good one posts one recovery. Alerts that cannot be posted
(the webhook down after its retries) wait in the cursor's outbox for the next tick.
The webhook URL is a secret: it is read when posting and never logged.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from retl_assets.errors import RetlError
from retl_assets.project import Project, resolve_secret
from retl_assets.project.schema import AlertRules

ALERT_SENSOR = "retl_alerts"
BATCH = 200  # run-status changes read per tick
OUTBOX_MAX = 100  # alerts kept while the webhook is down; the oldest go first
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
RULE_WORDS = {"on_failure": "run failed", "max_rejected_share": "rejected share",
              "max_runtime": "runtime", "row_deviation": "record count"}


@dataclass(frozen=True)
class SyncAsset:
    """What the sensor knows of one sync: its asset key and its step's op name."""

    name: str
    key: AssetKey
    op: str


@dataclass(frozen=True)
class Verdict:
    sync: str
    rule: str
    broken: bool
    detail: str  # the numbers, in words; never a row's values


@dataclass
class Step:
    """What one run's events say of one sync's step."""

    succeeded: bool = False
    failure: str | None = None
    started: float | None = None
    ended: float | None = None
    metadata: dict | None = None  # of its materialisation, if any
    materialised_at: float | None = None


# ------------------------------------------------------------------ rules


def rules_of(project: Project, sync: str) -> AlertRules:
    own = project.config.syncs[sync].alerts
    if own is not None:
        return own
    return project.config.alerts.rules if project.config.alerts else AlertRules()


def judge(sync: str, rules: AlertRules, step: Step, run_failed: bool,
          history: list[int] | None) -> list[Verdict]:
    """The verdicts one run gives one sync; a rule the run says nothing about is left out."""
    out = []
    if rules.on_failure and (run_failed or step.metadata is not None):
        broken = run_failed and not step.succeeded
        out.append(Verdict(sync, "on_failure", broken, step.failure or (
            "the run failed before the sync's step ran" if broken else "the sync's step succeeded")))
    meta = step.metadata
    if meta is not None and rules.max_rejected_share is not None:
        failed, tried = int(meta.get("failed") or 0), int(meta.get("succeeded") or 0)
        tried += failed
        share = failed / tried if tried else 0.0
        out.append(Verdict(sync, "max_rejected_share", share > rules.max_rejected_share,
                           f"{failed} of {tried} records failed ({share:.1%}; "
                           f"limit {rules.max_rejected_share:.1%})"))
    seconds = _seconds(step)
    if rules.max_runtime_s is not None and seconds is not None:
        out.append(Verdict(sync, "max_runtime", seconds > rules.max_runtime_s,
                           f"the sync took {seconds:.1f}s (limit {rules.max_runtime})"))
    if meta is not None and rules.row_deviation is not None and history is not None \
            and len(history) >= rules.lookback:
        sent, median = int(meta.get("sent") or 0), statistics.median(history)
        off = abs(sent - median) / median if median else (0.0 if sent == 0 else float("inf"))
        out.append(Verdict(sync, "row_deviation", off > rules.row_deviation,
                           f"{sent} records sent; the median of the last {len(history)} runs "
                           f"is {median:g} (limit ±{rules.row_deviation:.0%})"))
    return out


def _seconds(step: Step) -> float | None:
    if step.metadata is not None and step.metadata.get("duration_s") is not None:
        return float(step.metadata["duration_s"])
    if step.started is not None and step.ended is not None:
        return step.ended - step.started
    return None


# ------------------------------------------------------------- the runs


def planned_syncs(instance: DagsterInstance, run_id: str, syncs: list[SyncAsset],
                  job_syncs: dict[str, list[str]]) -> list[SyncAsset]:
    """The retl syncs a run set out to materialise: its asset selection, or its model job's."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return []
    if run.asset_selection:
        return [s for s in syncs if s.key in run.asset_selection]
    names = set(job_syncs.get(run.job_name, []))
    return [s for s in syncs if s.name in names]


def steps_of(instance: DagsterInstance, run_id: str, syncs: list[SyncAsset]) -> dict[str, Step]:
    """Each planned sync's step, read from the run's own events (a handful per step)."""
    by_op = {s.op: s.name for s in syncs}
    by_key = {s.key: s.name for s in syncs}
    steps = {s.name: Step() for s in syncs}
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
             DagsterEventType.STEP_FAILURE, DagsterEventType.ASSET_MATERIALIZATION}
    first_failure = None  # of any step: why a sync's step never ran
    for record in instance.get_records_for_run(run_id, of_type=kinds).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE and first_failure is None:
            first_failure = f"{entry.step_key}: {_root(event.step_failure_data.error)}"
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            name = by_key.get(mat.asset_key)
            if name:
                steps[name].metadata = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
                steps[name].materialised_at = entry.timestamp
            continue
        name = by_op.get((entry.step_key or "").split("[")[0])
        if name is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            steps[name].started = entry.timestamp
        else:
            steps[name].ended = entry.timestamp
            steps[name].succeeded = event.event_type == DagsterEventType.STEP_SUCCESS
            if not steps[name].succeeded:
                steps[name].failure = _root(event.step_failure_data.error)
    for step in steps.values():
        if step.started is None and first_failure:
            step.failure = f"the sync's step did not run, {first_failure}"
    return steps


def _root(error) -> str:
    while error is not None and error.cause is not None:
        error = error.cause
    text = (error.message if error else "").strip().splitlines()
    first = text[0] if text else "the step failed"
    if first.startswith(("retl_assets.", "dagster.")):  # drop the exception's class name
        first = first.split(": ", 1)[-1]
    return first[:300]


def sent_history(instance: DagsterInstance, key: AssetKey, before: float, n: int) -> list[int]:
    """Records sent by the sync's `n` materialisations before the time `before` (a time, as
    a run's own storage ids need not be the asset index's)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, before_timestamp=before), limit=n).records
    out = []
    for r in records:
        meta = r.asset_materialization.metadata if r.asset_materialization else {}
        value = meta.get("sent")
        out.append(int(getattr(value, "value", value) or 0))
    return out


# --------------------------------------------------------------- posting


def message(project: Project, verdict: Verdict, run_id: str) -> dict:
    """A Slack-compatible body: `text` for any receiver, `blocks` for Slack."""
    sync = project.config.syncs[verdict.sync]
    rule = RULE_WORDS[verdict.rule]
    detail = verdict.detail if project.config.samples == "full" else EMAIL.sub("<email>",
                                                                               verdict.detail)
    if verdict.broken:
        head = f":red_circle: retl sync {verdict.sync}: {rule} alert"
    else:
        head = f":large_green_circle: retl sync {verdict.sync}: {rule} recovered"
    owners = sync.owners or project.config.models[sync.model].owners
    context = (f"model {sync.model} -> {sync.destination} · run {run_id[:8]}"
               + (f" · owners {', '.join(owners)}" if owners else ""))
    text = f"{head}: {detail} ({context})"
    return {"text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*\n{detail}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]}


def post(url: str, body: dict, log: Callable[[str], None], attempts: int = 4,
         backoff_s: float = 0.5, timeout_s: float = 10.0) -> bool | None:
    """True: posted. False: the webhook refused it for good (4xx). None: it stayed down
    (5xx, 429, timeouts) after `attempts`: worth trying again later. Never raises."""
    for attempt in range(attempts):
        why = None
        try:
            response = _send(url, body, timeout_s)
        except httpx.TransportError as e:
            why = type(e).__name__  # its text may hold the URL: never logged
        else:
            if response.status_code < 300:
                return True
            if response.status_code != 429 and response.status_code < 500:
                log(f"the alert webhook refused an alert (HTTP {response.status_code}); check "
                    f"alerts.webhook. The alert was: {body['text']}")
                return False
            why = f"HTTP {response.status_code}"
        if attempt + 1 < attempts:
            delay = backoff_s * 2 ** attempt
            log(f"the alert webhook did not take an alert ({why}); trying again in {delay:g}s")
            time.sleep(delay)
    log(f"the alert webhook is still failing after {attempts} attempts; the alert is kept "
        f"and sent on a later tick")
    return None


def _send(url: str, body: dict, timeout_s: float) -> httpx.Response:
    """One POST through httpx's transport, not a Client: the Client logs every request's
    URL at INFO, and this URL is the secret."""
    request = httpx.Request("POST", url, json=body,
                            extensions={"timeout": httpx.Timeout(timeout_s).as_dict()})
    with httpx.HTTPTransport() as transport:
        response = transport.handle_request(request)
        response.read()
        return response


# ---------------------------------------------------------------- sensor


def alert_sensor(project: Project, syncs: list[SyncAsset], job_syncs: dict[str, list[str]],
                 backoff_s: float = 0.5):
    """The `retl_alerts` sensor; `job_syncs` maps each model's job to the syncs it runs."""

    alerts = project.config.alerts
    if alerts is None:
        raise RetlError("alerts: the project file names no webhook to post alerts to")

    @sensor(name=ALERT_SENSOR, minimum_interval_seconds=30,
            default_status=DefaultSensorStatus.RUNNING,
            description="Posts to the project's alert webhook when a sync first breaks one of "
                        "its alert rules, and again when it recovers")
    def retl_alerts(context: SensorEvaluationContext):
        first = not context.cursor
        seen = json.loads(context.cursor) if context.cursor else {}
        after, open_, outbox = seen.get("after"), dict(seen.get("open", {})), \
            list(seen.get("outbox", []))
        runs, after = _finished_runs(context.instance, after)
        changes = []
        for run_id, failed in runs:
            planned = planned_syncs(context.instance, run_id, syncs, job_syncs)
            if not planned:
                continue
            for name, step in steps_of(context.instance, run_id, planned).items():
                if not failed and step.metadata is None:
                    continue  # switched off, or not run: nothing to judge
                rules = rules_of(project, name)
                key = next(s.key for s in planned if s.name == name)
                history = (sent_history(context.instance, key, step.materialised_at,
                                        rules.lookback)
                           if rules.row_deviation is not None and step.materialised_at else None)
                for v in judge(name, rules, step, failed, history):
                    slot = f"{v.sync}/{v.rule}"
                    if v.broken == (slot in open_):
                        continue  # no change: already alerted, or still fine
                    if v.broken:
                        open_[slot] = run_id
                    else:
                        open_.pop(slot)
                    changes.append((slot, v, run_id))
        if first:  # switched on now: alert what is broken, not the history before it
            changes = [c for c in changes if c[0] in open_ and open_[c[0]] == c[2]]
        outbox += [message(project, v, run_id) for _, v, run_id in changes]
        outbox = _flush(outbox[-OUTBOX_MAX:], alerts.webhook, context.log, backoff_s)
        context.update_cursor(json.dumps({"after": after, "open": open_, "outbox": outbox}))
        return SkipReason(f"{len(runs)} finished runs read; {len(changes)} alerts; "
                          f"{len(open_)} rules in violation"
                          + (f"; {len(outbox)} alerts wait for the webhook" if outbox else ""))

    return retl_alerts


def _finished_runs(instance: DagsterInstance, after: int | None
                   ) -> tuple[list[tuple[str, bool]], int | None]:
    """(run id, failed) of runs that ended after storage id `after`, oldest first. On the
    first tick (no `after`), only the newest BATCH of each: enough to know what is broken."""
    found, limit_at = [], None
    for kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
        result = instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(kind, after_storage_id=after), limit=BATCH,
            ascending=after is not None)
        found += [(r.storage_id, r.event_log_entry.run_id, kind == DagsterEventType.RUN_FAILURE)
                  for r in result.records]
        if after is not None and result.has_more and result.records:  # the rest next tick
            last = result.records[-1].storage_id
            limit_at = last if limit_at is None else min(limit_at, last)
    found = sorted(f for f in found if limit_at is None or f[0] <= limit_at)
    if found:
        after = found[-1][0]
    return [(run_id, failed) for _, run_id, failed in found], after


def _flush(outbox: list[dict], webhook, log, backoff_s: float) -> list[dict]:
    """Post each waiting alert in order; what the webhook did not take stays."""
    if not outbox:
        return outbox
    try:
        url = resolve_secret(webhook, "alerts.webhook")
    except RetlError as e:
        log.error(f"{e}; {len(outbox)} alerts wait until it is")
        return outbox
    for i, body in enumerate(outbox):
        answer = post(url or "", body, log.warning, backoff_s=backoff_s)
        if answer is None:
            return outbox[i:]
        if answer:
            log.info(f"alert posted: {body['text']}")
    return []


__all__ = ["ALERT_SENSOR", "SyncAsset", "Verdict", "alert_sensor", "judge", "message", "post",
           "rules_of"]
