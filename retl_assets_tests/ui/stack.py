"""A retl project served the way a team runs it: a warehouse, a destination emulator, a Dagster
home with history, then `dagster-webserver` and `dagster-daemon` on it, each its own process.

Every process started here is stopped by `Stack.close()`, which the test always calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from dagster import DagsterInstance

from retl_assets.demo.generate import generate
from retl_assets.emulators import EmulatorServer, SegmentEmulator, build_segment_app
from retl_assets_tests.conftest import PROJECT as CONFTEST_PROJECT
from retl_assets_tests.conftest import WRITE_KEY, free_port, stop_log_tails

ROOT = Path(__file__).resolve().parents[2]


def _location_name() -> str:
    """The code location workspace.yaml names (its module's name unless it names one)."""
    entry = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]
    module = entry["python_module"]
    if isinstance(module, str):
        return module
    return module.get("location_name") or module["module_name"]


LOCATION = _location_name()
REPO = f"__repository__@{LOCATION}"
SCHEDULE = "retl_contacts_schedule"

# One record the destination refuses, so the sync's errors table has a row to show.
REJECTED_KEY, REJECTED_EMAIL = "u000007", "user7@example.com"

# Small batches, one at a time: with the emulator's latency a full resync then takes minutes,
# long enough to hold a run in progress across a schedule tick; the latency is dropped
# once the tick has been seen, so the run ends in a second.
PROJECT = (CONFTEST_PROJECT
           .replace("schedule: {{every: 15m}}", "schedule: {{every: 1m}}")
           .replace("    max_retries: 8\n",
                    "    batch_size: 5\n    max_concurrency: 1\n    max_retries: 3\n"))
assert "every: 1m" in PROJECT and "batch_size: 5" in PROJECT, "conftest's PROJECT changed"

TICKS = """query Ticks($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    ... on Schedule { scheduleState { ticks(limit: 20) { status skipReason timestamp runIds } } }
    ... on PythonError { message }
    ... on ScheduleNotFoundError { message }
  }
}"""


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")


@dataclass
class Process:
    """A child process in its own process group, its output kept in files for failures."""

    name: str
    popen: subprocess.Popen
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        text = self.stdout() + self.err.read_text(errors="replace")
        return f"--- {self.name} (exit {self.popen.poll()}):\n{text[-chars:]}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the whole group (the daemon and the webserver start code servers of
        their own), then SIGKILL to whatever of it is left."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        self.popen.wait(timeout=grace)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Stack:
    root: Path
    emulator: SegmentEmulator
    url: str = ""
    server: EmulatorServer | None = None
    processes: list[Process] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def project_file(self) -> Path:
        return self.root / "retl.yaml"

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "RETL_PROJECT": str(self.project_file),
               "DAGSTER_HOME": str(self.home), "CIO_WRITE_KEY": WRITE_KEY}
        env.pop("RETL_STATE_DIR", None)  # the project's own .retl/state, not the caller's
        return env

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def spawn(self, name: str, argv: list[str]) -> Process:
        out, err = self.root / f"{name}.out", self.root / f"{name}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            popen = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr,
                                     start_new_session=True)
        process = Process(name, popen, out, err)
        self.processes.append(process)
        return process

    def retl(self, *args: str) -> Process:
        return self.spawn(f"retl_{args[0]}_{len(self.processes)}",
                          [sys.executable, "-m", "retl_assets.cli",
                           "--project", str(self.project_file), *args])

    def dagster(self, *args: str, timeout: float = 120) -> str:
        """A `dagster` CLI command on this project; its output, or a failure saying why."""
        done = subprocess.run([sys.executable, "-m", "dagster", *args,
                               "-w", str(ROOT / "workspace.yaml")],
                              cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        assert done.returncode == 0, f"dagster {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def start_webserver(self) -> Process:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        return self.spawn("webserver", [sys.executable, "-m", "dagster_webserver",
                                        "-w", str(ROOT / "workspace.yaml"),
                                        "-h", "127.0.0.1", "-p", str(port)])

    def start_daemon(self) -> Process:
        daemon = Path(sys.executable).with_name("dagster-daemon")  # installed with dagster
        return self.spawn("daemon", [str(daemon), "run", "-w", str(ROOT / "workspace.yaml")])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        answer = httpx.post(f"{self.url}/graphql", json={"query": query,
                                                         "variables": variables or {}},
                            timeout=30)
        answer.raise_for_status()
        return answer.json()["data"]

    def schedule_ticks(self, name: str = SCHEDULE) -> list[dict]:
        """The schedule's recent ticks as the UI reads them: status, skip reason, run ids."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                    "scheduleName": name}
        data = self.graphql(TICKS, {"selector": selector})["scheduleOrError"]
        assert "scheduleState" in data, f"schedule {name}: {data}"
        return data["scheduleState"]["ticks"]

    def wait_until_served(self, webserver: Process, timeout: float = 90) -> None:
        def served():
            assert webserver.alive(), f"the webserver exited:\n{webserver.tail()}"
            try:
                nodes = self.graphql("{ assetNodes { id } }")["assetNodes"]
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                return False
            return bool(nodes)
        try:
            wait_for("the webserver to serve the project", served, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{webserver.tail()}") from None

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.server is not None:
            self.server.stop()
        stop_log_tails(self.home)


def build_stack(root: Path) -> Stack:
    """The demo-like project in `root`, its emulator serving, nothing else started yet."""
    emulator = SegmentEmulator(write_keys={WRITE_KEY})
    server = EmulatorServer(build_segment_app(emulator)).start()
    stack = Stack(root, emulator, server)
    try:
        generate(root / "warehouse.duckdb", contacts=300, companies=10, events=20)
        stack.project_file.write_text(PROJECT.format(url=server.url))
        stack.home.mkdir()
        (stack.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # Create the instance's databases once, here: processes that start together would
        # each try to, and SQLite's migrations race (two alembic heads; the code won't load).
        with stack.instance() as instance:
            instance.get_runs(limit=1)
    except BaseException:
        stack.close()
        raise
    emulator.set_faults(poison={"path": "traits.email", "value": REJECTED_EMAIL})
    return stack
