"""Run the vendors' official Node libraries (retl_assets_tests/conformance/node/) from pytest.

Each script there reads a JSON list of calls on stdin, runs them with the library against
the base URL it is given, and prints one JSON object. scripts/setup.sh installs the pinned
packages (`npm ci`); without node or without them, the tests that need them skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"
TIMEOUT_S = 60  # one script run: node's start-up, a few loopback calls, a 10 s client timeout


def pinned(package: str) -> str:
    return json.loads((NODE_DIR / "package.json").read_text())["dependencies"][package]


def require(package: str) -> str:
    """The node binary, once `package` is installed at its pinned version; else skip."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the vendors' Node libraries cannot run "
                    "(install Node 18+, then run scripts/setup.sh)")
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    if not manifest.exists():
        pytest.skip(f"{package} is not installed in {NODE_DIR}/node_modules: run "
                    f"scripts/setup.sh (it runs npm ci there)")
    installed = json.loads(manifest.read_text()).get("version")
    if installed != pinned(package):
        pytest.skip(f"{package} {installed} is installed but {pinned(package)} is pinned: "
                    f"run scripts/setup.sh")
    return node


def run(node: str, script: str, args: list[str], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Run `script` with `calls` on stdin; its JSON output. The script gets a minimal
    environment: no proxy settings (the library's HTTP client connects to loopback
    directly) and none of the variables @iterable/api validates at import (NODE_ENV,
    LOG_*, *_TIMEOUT, ITERABLE_*), except the ones set here."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update(NO_PROXY="127.0.0.1,localhost", NODE_ENV="production", LOG_LEVEL="error")
    done = subprocess.run([node, str(NODE_DIR / script), *args], input=json.dumps(calls),
                          capture_output=True, text=True, timeout=TIMEOUT_S, cwd=NODE_DIR,
                          env=env, check=False)
    assert done.returncode == 0, f"{script} exited {done.returncode}: {done.stderr[-2000:]}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{script} printed no JSON: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return json.loads(lines[-1])


class Recorder:
    """ASGI middleware that keeps every HTTP request an emulator receives (method, decoded
    path, lower-cased headers, body), so a test can hold what retl's writer sent against
    what the vendor's library sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.requests.append({
            "method": scope["method"], "path": scope["path"],
            "headers": {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in scope["headers"]},
            "body": body})
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def api(self) -> list[dict[str, Any]]:
        """The vendor API's requests, without the emulator's admin routes."""
        return [r for r in self.requests
                if not r["path"].startswith(("/_emulator", "/healthz"))]
