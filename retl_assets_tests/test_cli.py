"""`retl` as a user runs it: a separate process on the same instance and state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from retl_assets.emulators import EmulatorServer, SegmentEmulator, build_segment_app
from retl_assets_tests.conftest import WRITE_KEY


def retl(ws, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    full_env = {**os.environ, "RETL_PROJECT": str(ws.root / "retl.yaml"),
                "DAGSTER_HOME": str(ws.root / "dagster_home"), "CIO_WRITE_KEY": WRITE_KEY,
                **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "retl_assets.cli", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_retl(ws, *args: str, **kw) -> tuple[int, str, str]:
    proc = retl(ws, *args, **kw)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def test_sync_json_reports_the_run_and_status_lists_it(workspace, emulator):
    code, out, err = run_retl(workspace, "sync", "contacts", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "success" and result["model"] == "contacts"
    assert (result["rows"], result["added"], result["updated"], result["deleted"]) == (300, 300, 0, 0)
    assert result["syncs"]["contacts_identify"] == {**result["syncs"]["contacts_identify"],
                                                   "sent": 300, "succeeded": 300, "failed": 0,
                                                   "owed": 0}
    # The run is in the instance's history, as the UI shows it.
    assert workspace.instance.get_run_by_id(result["run_id"]) is not None
    code, out, _ = run_retl(workspace, "status", "--json")
    assert code == 0
    assert json.loads(out)["runs"][0]["run_id"] == result["run_id"]


def test_failed_sync_exits_non_zero_with_the_error(workspace):
    (workspace.root / "retl.yaml").write_text(
        (workspace.root / "retl.yaml").read_text().replace("FROM contacts", "FROM nope"))
    code, out, _ = run_retl(workspace, "sync", "contacts", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["status"] == "failure" and "nope" in " ".join(result["errors"])


def test_validate_and_preview(workspace):
    code, out, _ = run_retl(workspace, "validate", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run_retl(workspace, "preview", "contacts", "--json")
    data = json.loads(out)
    assert [c["name"] for c in data["columns"]] == ["userId", "email", "first_name", "plan",
                                                   "updated_at"]
    assert len(data["rows"]) == 10
    (workspace.root / "retl.yaml").write_text(
        (workspace.root / "retl.yaml").read_text().replace("userId: userId", "userId: nope"))
    code, out, _ = run_retl(workspace, "validate", "--json")
    assert code == 1
    assert "syncs.contacts_deleted.mapping.userId" in json.loads(out)["problems"][0]


def test_killed_sync_loses_nothing_and_resumes(workspace, emulator):
    workspace.sql("""INSERT INTO contacts SELECT 'bulk-' || i, 'b' || i || '@example.com', 'B',
                     'free', 1, TIMESTAMP '2026-01-01' FROM range(6000) t(i)""")
    (workspace.root / "retl.yaml").write_text((workspace.root / "retl.yaml").read_text().replace(
        "max_retries: 8", "max_retries: 8\n    batch_size: 100\n    max_concurrency: 1"))
    emulator.set_faults(latency_ms=60)
    proc = retl(workspace, "sync", "contacts", "--json", env={"RETL_LEASE_TTL": "2"})
    deadline = time.time() + 120
    while emulator.state()["stats"]["messages_accepted"] < 1500:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    delivered = emulator.state()["stats"]["messages_accepted"]
    assert delivered < 6300
    assert workspace.store.sync_state("contacts_identify").cursor is None  # nothing committed

    emulator.set_faults(latency_ms=0)
    time.sleep(2.5)  # the killed run's lease expires
    run = workspace.sync()
    assert run.status == "success", run.errors
    assert emulator.state()["profiles"] == workspace.model_rows()
    # The checkpoint spared re-sending what the killed run had delivered (at most the one
    # batch in flight went twice, and the destination dropped it by messageId).
    assert run.syncs["contacts_identify"]["succeeded"] == 6300
    assert run.syncs["contacts_identify"]["sent"] <= 6300 - delivered + 100
    assert emulator.state()["stats"]["duplicates"] <= 100


def test_test_connection_says_plainly_what_is_wrong(workspace, emulator):
    code, out, _ = run_retl(workspace, "test-connection", "cio", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run_retl(workspace, "test-connection", "cio", env={"CIO_WRITE_KEY": "nope"})
    assert code == 1 and "refused the credentials" in out and "nope" not in out
    code, _, err = run_retl(workspace, "test-connection", "cio", env={"CIO_WRITE_KEY": ""})
    assert code == 2 and "CIO_WRITE_KEY is not set" in err


def test_test_connection_says_a_segment_key_cannot_be_confirmed(workspace):
    # Segment answers 200 to any write key, so a "credentials accepted" would be a lie.
    segment = SegmentEmulator(write_keys={"right-key"}, flavor="segment")
    with EmulatorServer(build_segment_app(segment)) as server:
        path = workspace.root / "retl.yaml"
        path.write_text(path.read_text().replace("destinations:\n", (
            "destinations:\n  seg:\n    type: segment\n"
            "    write_key: {env: SEG_WRITE_KEY}\n"
            f"    base_url: {server.url}\n"), 1))
        code, out, _ = run_retl(workspace, "test-connection", "seg", "--json",
                                env={"SEG_WRITE_KEY": "wrong-key"})
    result = json.loads(out)
    assert code == 0 and result["ok"] is True
    assert "cannot be confirmed" in result["message"] and "wrong-key" not in out
    assert segment.state()["stats"]["unauthorized"] == 1
