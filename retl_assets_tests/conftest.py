"""Shared fixtures: a warehouse, an emulator, a project file and a real Dagster instance."""

from __future__ import annotations

import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from retl_assets.demo.generate import generate
from retl_assets.emulators import EmulatorServer, SegmentEmulator, build_segment_app
from retl_assets.project import Project, load_project
from retl_assets.runner import RunSummary, sync_model
from retl_assets.state.store import StateStore
from retl_assets_tests.pg_server import postgres_server  # noqa: F401

WRITE_KEY = "test-write-key"

PROJECT = """
sources:
  warehouse:
    type: duckdb
    path: warehouse.duckdb
destinations:
  cio:
    type: customerio
    write_key: {{env: CIO_WRITE_KEY}}
    base_url: {url}
    max_retries: 8
models:
  contacts:
    source: warehouse
    primary_key: userId
    schedule: {{every: 15m}}
    sql: |
      SELECT id AS "userId", email, first_name, plan, updated_at FROM contacts
syncs:
  contacts_identify:
    model: contacts
    destination: cio
    action: identify
    records: added_or_updated
  contacts_deleted:
    model: contacts
    destination: cio
    action: track
    records: deleted
    mapping:
      userId: userId
      event: {{value: "Contact Deleted"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def emulator():
    emu = SegmentEmulator(write_keys={WRITE_KEY})
    with EmulatorServer(build_segment_app(emu)).start() as server:
        emu.url = server.url  # type: ignore[attr-defined]
        yield emu


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home), overrides={"telemetry": {"enabled": False}}) as inst:
        yield inst
    stop_log_tails(home)


def stop_log_tails(home: Path) -> None:
    """Dagster captures a run's logs with `tail -F` processes; one started by a run on a
    background thread can outlive the test. Stop whatever still reads this instance's files."""
    import os
    import signal

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"tail") and any(str(home).encode() in a for a in argv):
            try:
                os.kill(int(entry.name), signal.SIGKILL)  # it ignores SIGTERM
            except OSError:
                pass


@dataclass
class Workspace:
    root: Path
    instance: DagsterInstance

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    def write(self, text: str) -> Path:
        path = self.root / "retl.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    @property
    def project(self) -> Project:
        return load_project(self.root / "retl.yaml")

    @property
    def store(self) -> StateStore:
        return StateStore(self.project.state_dir)

    def sql(self, statement: str) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse))
        try:
            return con.execute(statement).fetchall()
        finally:
            con.close()

    def sync(self, model: str = "contacts", **kw) -> RunSummary:
        return sync_model(self.project, model, instance=self.instance, **kw)

    def add_bulk_contacts(self, n: int = 19_700) -> None:
        """More contacts (300 + 19,700 = the 20k-row first sync of the rate-limit tests)."""
        self.sql(f"""INSERT INTO contacts SELECT 'bulk-' || i, 'bulk' || i || '@example.com',
                     'B', 'free', 1, TIMESTAMP '2026-01-01' FROM range({n}) t(i)""")

    def owed(self, sync: str, key: str = "userId") -> dict[str, str]:
        """The rows a sync still owes, by primary key, with the reason kept in its ledger."""
        store = self.store
        ledger = store.ledger_path(sync, store.sync_state(sync))
        if ledger is None:
            return {}
        return dict(duckdb.sql(f"SELECT \"{key}\", __retl_error FROM read_parquet('{ledger}')")
                    .fetchall())

    def model_rows(self) -> dict[str, dict]:
        rows = self.sql("SELECT id, email, first_name, plan, "
                        "strftime(updated_at, '%Y-%m-%dT%H:%M:%S.%gZ') FROM contacts")
        return {r[0]: {"email": r[1], "first_name": r[2], "plan": r[3], "updated_at": r[4]}
                for r in rows}


@pytest.fixture
def workspace(tmp_path, emulator, instance, monkeypatch) -> Workspace:
    monkeypatch.setenv("CIO_WRITE_KEY", WRITE_KEY)
    monkeypatch.delenv("RETL_STATE_DIR", raising=False)
    ws = Workspace(tmp_path, instance)
    generate(ws.warehouse, contacts=300, companies=20, events=50)
    ws.write(PROJECT.format(url=emulator.url))
    return ws
