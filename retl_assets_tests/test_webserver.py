"""The Dagster UI on a retl project: its assets, checks, schedules and our runs are there."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from retl_assets_tests.conftest import WRITE_KEY, free_port

QUERY = """{
  assetNodes { assetKey { path } isPartitioned assetChecksOrError {
      ... on AssetChecks { checks { name } } } }
  runsOrError { ... on Runs { results { runId jobName status } } }
}"""



def test_webserver_shows_assets_checks_and_runs(workspace):
    run = workspace.sync()
    assert run.status == "success"
    port = free_port()
    env = {**os.environ, "RETL_PROJECT": str(workspace.root / "retl.yaml"),
           "DAGSTER_HOME": str(workspace.root / "dagster_home"), "CIO_WRITE_KEY": WRITE_KEY}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", os.path.join(root, "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        data = None
        deadline = time.time() + 90
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY},
                               timeout=10)
                data = r.json()["data"]
                if data["assetNodes"]:
                    break
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass
            time.sleep(0.5)
        assert data and data["assetNodes"], "the webserver never served the project"
        keys = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
        assert {"models/contacts", "diffs/contacts", "syncs/contacts_identify",
                "syncs/contacts_deleted"} <= set(keys)
        assert keys["diffs/contacts"]["isPartitioned"]
        checks = {c["name"] for c in keys["models/contacts"]["assetChecksOrError"]["checks"]}
        assert checks == {"primary_key_present", "primary_key_not_null", "primary_key_unique"}
        runs = data["runsOrError"]["results"]
        assert any(r["runId"] == run.run_id and r["status"] == "SUCCESS" for r in runs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
