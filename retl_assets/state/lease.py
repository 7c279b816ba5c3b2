"""One run of a model at a time, however it was started.

A lease file names the run holding the model. It is renewed while the run works; a lease
whose run has ended, or that was not renewed within its time to live (a killed process),
may be taken over.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from retl_assets.errors import LeaseHeldError
from retl_assets.state.files import read_json, write_json

DEFAULT_TTL_S = 300.0


def lease_ttl() -> float:
    return float(os.environ.get("RETL_LEASE_TTL", DEFAULT_TTL_S))


def acquire(path: Path, model: str, run_id: str,
            run_is_active: Callable[[str], bool] = lambda _run: True) -> None:
    """Take or renew the model's lease for `run_id`, or raise naming the holder."""
    held = read_json(path)
    now = time.time()
    if held and held.get("run_id") != run_id:
        expired = now > float(held.get("expires_at", 0))
        if not expired and run_is_active(held["run_id"]):
            raise LeaseHeldError(
                f"model {model!r} is being synced by run {held['run_id']} "
                f"(pid {held.get('pid')} on {held.get('host')}); try again when it ends"
            )
    write_json(path, {
        "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
        "acquired_at": now, "expires_at": now + lease_ttl(),
    })


def release(path: Path, run_id: str) -> None:
    held = read_json(path)
    if held and held.get("run_id") == run_id:
        path.unlink(missing_ok=True)


class Held:
    """Hold the lease for the length of a `with` block, renewing it in the background."""

    def __init__(self, path: Path, model: str, run_id: str,
                 run_is_active: Callable[[str], bool] = lambda _run: True):
        import threading

        self._args = (path, model, run_id)
        self._active = run_is_active
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self) -> Held:
        acquire(*self._args, run_is_active=self._active)
        self._thread.start()
        return self

    def _renew(self) -> None:
        path, _model, run_id = self._args
        while not self._stop.wait(lease_ttl() / 3):
            held = read_json(path)
            if held and held.get("run_id") == run_id:
                held["expires_at"] = time.time() + lease_ttl()
                write_json(path, held)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
