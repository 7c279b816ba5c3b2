"""What the conformance tests share: an emulator served on loopback, and a flush that must
finish in time (the Segment-spec libraries flush by joining their queue, which never times
out on its own)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from retl_assets.emulators import EmulatorServer


@contextmanager
def served(app: Any) -> Iterator[str]:
    """The base URL of `app` served on 127.0.0.1; stopped afterwards."""
    server = EmulatorServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()


def finishes_within(seconds: float, work: Callable[[], None]) -> None:
    """Run `work` (a library's flush or shutdown); fail the test if it takes longer."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the library did not finish within {seconds} s"
    if failure:
        raise failure[0]
