"""Serve an emulator's ASGI app over real HTTP: in a background thread or blocking (CLI)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

# ASGI apps are plain callables; Starlette is what we pass, but nothing here depends on it.
ASGIApp = Any


class EmulatorServer:
    """Serve `app` with uvicorn on 127.0.0.1 in a daemon thread.

    We bind the listening socket ourselves so that port 0 resolves to a real port before
    uvicorn starts, and `.url` never has to dig into uvicorn's internals.
    """

    def __init__(self, app: ASGIApp, port: int = 0, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmulatorServer is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        if self._thread is not None:
            raise RuntimeError("EmulatorServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(128)
        self._sock = sock
        self._port = sock.getsockname()[1]

        # log_config=None: an embedded server must not rewrite the host process's logging setup.
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            log_config=None,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"emulator-{self._port}",
            daemon=True,
        )
        self._thread.start()

        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("emulator server thread exited before it started serving")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Open keep-alive connections can hold a graceful shutdown; don't hang a test run.
            self._server.force_exit = True
            self._thread.join(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._server = None
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(app: ASGIApp, port: int, host: str = "127.0.0.1") -> None:
    """Serve `app` in the foreground until interrupted (used by the CLI)."""
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
