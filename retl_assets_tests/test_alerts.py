"""Alerts: real runs on a real instance, the `retl_alerts` sensor evaluated against it, and a
real HTTP receiver on loopback standing in for Slack. One post when a rule is first broken,
none while it stays broken, one when it recovers."""

from __future__ import annotations

import logging

import pytest
from dagster import build_sensor_context
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from retl_assets.assets import build_retl_definitions
from retl_assets.automation.alerts import ALERT_SENSOR, Step, Verdict, judge, message
from retl_assets.emulators import EmulatorServer
from retl_assets.project.schema import AlertRules

HOOK_PATH = "/services/T0/B0/very-secret-token"


class Receiver:
    """A Slack-like incoming webhook: keeps what it is posted; `down` answers 503 that many
    times (or always, for -1)."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.down = 0
        self.app = Starlette(routes=[Route(HOOK_PATH, self.receive, methods=["POST"])])

    async def receive(self, request: Request):
        if self.down:
            self.down -= 1 if self.down > 0 else 0
            return PlainTextResponse("busy", status_code=503)
        self.posts.append(await request.json())
        return PlainTextResponse("ok")

    def texts(self) -> list[str]:
        return [p["text"] for p in self.posts]


@pytest.fixture
def receiver(monkeypatch):
    hook = Receiver()
    with EmulatorServer(hook.app).start() as server:
        monkeypatch.setenv("RETL_ALERT_WEBHOOK", server.url + HOOK_PATH)
        hook.url = server.url + HOOK_PATH  # type: ignore[attr-defined]
        yield hook


def with_alerts(workspace, rules: str = "", sync_rules: str = "") -> None:
    text = (workspace.root / "retl.yaml").read_text()
    # One sync planned per run: the deleted-contacts sync is switched off in the file.
    text = text.replace("    records: deleted\n", "    records: deleted\n    enabled: false\n")
    if sync_rules:
        text = text.replace("    records: added_or_updated\n",
                            f"    records: added_or_updated\n    alerts: {sync_rules}\n")
    text += "alerts:\n  webhook: {env: RETL_ALERT_WEBHOOK}\n" + (
        f"  rules: {rules}\n" if rules else "")
    workspace.write(text)


class Ticks:
    """The alert sensor, ticking against the workspace's instance, its cursor carried over."""

    def __init__(self, workspace) -> None:
        defs = build_retl_definitions(workspace.project)
        self.sensor = defs.get_sensor_def(ALERT_SENSOR)
        self.instance = workspace.instance
        self.cursor = None

    def tick(self) -> str:
        data = self.sensor.evaluate_tick(build_sensor_context(instance=self.instance,
                                                              cursor=self.cursor))
        self.cursor = data.cursor
        return data.skip_message or ""


def test_a_failing_sync_alerts_once_and_recovers_once(workspace, receiver, monkeypatch):
    with_alerts(workspace)
    ticks = Ticks(workspace)
    ticks.tick()  # switched on: nothing has run yet
    monkeypatch.delenv("CIO_WRITE_KEY")  # every run now fails at the sync's step
    assert workspace.sync().status == "failure"
    ticks.tick()
    assert len(receiver.posts) == 1
    text = receiver.texts()[0]
    assert "retl sync contacts_identify: run failed alert" in text
    assert "CIO_WRITE_KEY is not set" in text and "blocks" in receiver.posts[0]
    assert workspace.sync().status == "failure"
    ticks.tick()
    assert len(receiver.posts) == 1  # still failing: no second post
    monkeypatch.setenv("CIO_WRITE_KEY", "test-write-key")
    assert workspace.sync().status == "success"
    assert workspace.sync().status == "success"
    ticks.tick()
    assert len(receiver.posts) == 2  # one recovery for two good runs
    assert "retl sync contacts_identify: run failed recovered" in receiver.texts()[1]


def test_a_high_rejected_share_alerts_until_the_rows_go_through(workspace, receiver, emulator):
    # The sync's own rule overrides the project's (5%): one rejected row in 300 breaks it.
    with_alerts(workspace, sync_rules="{max_rejected_share: 0.001}")
    email = workspace.sql("SELECT email FROM contacts WHERE id = 'u000007'")[0][0]
    emulator.set_faults(poison={"path": "traits.email", "value": email})
    ticks = Ticks(workspace)
    ticks.tick()
    first = workspace.sync()
    assert first.syncs["contacts_identify"]["rejected"] == 1
    ticks.tick()
    assert len(receiver.posts) == 1
    assert "rejected share alert: 1 of 300 records failed (0.3%; limit 0.1%)" in \
        receiver.texts()[0]
    assert email not in receiver.texts()[0]
    workspace.sync()  # the owed row is refused again: 1 of 1
    ticks.tick()
    assert len(receiver.posts) == 1
    emulator.set_faults(poison=None)
    assert workspace.sync().syncs["contacts_identify"]["succeeded"] == 1
    ticks.tick()
    assert len(receiver.posts) == 2
    assert "rejected share recovered: 0 of 1 records failed" in receiver.texts()[1]


def test_a_record_count_far_from_the_median_alerts_and_recovers(workspace, receiver):
    with_alerts(workspace, rules="{row_deviation: 0.5, lookback: 3}")
    ticks = Ticks(workspace)
    ticks.tick()
    workspace.sync()  # the first full sync: 300 records
    for batch in range(3):  # 10 changed rows a run: the usual
        workspace.sql(f"UPDATE contacts SET first_name = 'R{batch}' WHERE id <= 'u000010'")
        workspace.sync()
    ticks.tick()
    assert receiver.posts == []  # 10 against a median of 10 (300 only once in the window)
    workspace.sql("UPDATE contacts SET first_name = 'Big' WHERE id <= 'u000100'")
    workspace.sync()
    ticks.tick()
    assert receiver.texts() == [receiver.texts()[0]]
    assert "record count alert: 100 records sent; the median of the last 3 runs is 10" in \
        receiver.texts()[0]
    workspace.sql("UPDATE contacts SET first_name = 'Small' WHERE id <= 'u000010'")
    workspace.sync()
    ticks.tick()
    assert len(receiver.posts) == 2 and "record count recovered" in receiver.texts()[1]


def test_a_failing_webhook_is_retried_and_the_alert_kept(workspace, receiver, monkeypatch,
                                                         caplog, capfd):
    with_alerts(workspace)
    ticks = Ticks(workspace)
    ticks.tick()
    monkeypatch.delenv("CIO_WRITE_KEY")
    workspace.sync()
    receiver.down = -1  # down for good
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG):  # the libraries' own log lines too
        summary = ticks.tick()  # does not raise
        assert receiver.posts == [] and "1 alerts wait for the webhook" in summary
        receiver.down = 1  # back, after one more 503
        ticks.tick()
    assert len(receiver.posts) == 1 and "run failed alert" in receiver.texts()[0]
    sensor_log = capfd.readouterr().err  # the sensor's log, as the daemon would keep it
    assert "still failing after 4 attempts" in sensor_log and "trying again" in sensor_log
    assert "alert posted" in sensor_log
    assert "very-secret-token" not in sensor_log + caplog.text


def test_personal_data_stays_out_unless_samples_full(workspace):
    project = workspace.project
    verdict = Verdict("contacts_identify", "on_failure", True, "refused ann@example.com")
    assert "ann@example.com" not in message(project, verdict, "r" * 32)["text"]
    full = workspace.write((workspace.root / "retl.yaml").read_text() + "samples: full\n")
    assert full and "ann@example.com" in message(workspace.project, verdict, "r" * 32)["text"]


def test_the_rules_judge_what_a_run_says():
    rules = AlertRules(max_runtime="1m", max_rejected_share=0.1)
    slow = Step(succeeded=True, metadata={"sent": 10, "succeeded": 10, "failed": 0,
                                          "duration_s": 61.0})
    verdicts = {v.rule: v.broken for v in judge("s", rules, slow, False, None)}
    assert verdicts == {"on_failure": False, "max_rejected_share": False, "max_runtime": True}
    failed = Step(failure="boom", started=0.0, ended=5.0)
    assert [(v.rule, v.broken, v.detail) for v in judge("s", rules, failed, True, None)] == \
        [("on_failure", True, "boom"), ("max_runtime", False, "the sync took 5.0s (limit 1m)")]
