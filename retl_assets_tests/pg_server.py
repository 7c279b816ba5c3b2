"""A throwaway PostgreSQL server for tests.

`PostgresServer` runs initdb into a fresh temp dir and starts `postgres` on
127.0.0.1 on a free port, with durability switched off (the data is discarded
anyway). `postgres_server` is a session-scoped pytest fixture around it; conftest
files import it with `from retl_assets_tests.pg_server import postgres_server`.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "retl"
DATABASE = "warehouse"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def _has_server(bindir: str | os.PathLike[str]) -> bool:
    # Debian's pg_config (libpq-dev) points at /usr/lib/postgresql/NN/bin even when
    # only the client is installed, so check for the server binaries themselves.
    return all(os.access(Path(bindir, exe), os.X_OK) for exe in ("initdb", "postgres"))


def find_pg_bindir() -> Path:
    """RETL_PG_BIN, else /usr/lib/postgresql/<highest>/bin, else pg_config --bindir, else PATH."""
    candidates: list[str] = []
    if env := os.environ.get("RETL_PG_BIN"):
        if not _has_server(env):
            raise RuntimeError(f"RETL_PG_BIN={env!r} does not contain initdb and postgres")
        return Path(env)

    def version(path: str) -> tuple[int, ...]:
        # Numeric sort, so that 9.6 < 10 < 15.
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    if postgres := shutil.which("postgres"):
        candidates.append(str(Path(postgres).parent))
    for bindir in candidates:
        if bindir and _has_server(bindir):
            return Path(bindir)
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres) not found. Install them "
        "(Debian: apt-get install postgresql-15) or set RETL_PG_BIN to their directory."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A private postgres instance in a temp dir; use as a context manager or start()/stop()."""

    def __init__(self, bindir: str | os.PathLike[str] | None = None) -> None:
        self.bindir = Path(bindir) if bindir else find_pg_bindir()
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        # postgres and initdb refuse to run as root: drop to an unprivileged account.
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                self._run_as = pwd.getpwnam("nobody")

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PostgresServer is not started")
        return self._port

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "postgres.log"

    def _popen(self, args: list[str], log) -> subprocess.Popen[bytes]:
        # Clear PG* variables (PGDATA, PGPORT, ...) from the caller so they cannot
        # redirect initdb/postgres; cwd is the temp dir because an unprivileged user
        # may be unable to read the caller's cwd (e.g. /root).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict = {}
        if self._run_as is not None:
            kwargs = dict(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
            env["HOME"] = str(self._tmp)
        return subprocess.Popen(
            args, cwd=self._tmp, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, **kwargs,
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> PostgresServer:
        if self._proc is not None:
            return self
        # Short path under /tmp: the unix socket path must stay below ~107 bytes.
        self._tmp = Path(tempfile.mkdtemp(prefix="retl-pg-"))
        if self._run_as is not None:
            os.chown(self._tmp, self._run_as.pw_uid, self._run_as.pw_gid)
        atexit.register(self.stop)  # safety net if the caller never reaches stop()
        try:
            self._initdb()
            self._start_postmaster()
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        data = self._tmp / "data"
        with open(self.log_path, "ab") as log:
            rc = self._popen(
                [str(self.bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust",
                 "-E", "UTF8", "--no-locale", "--no-sync"],
                log,
            ).wait(timeout=120)
        if rc != 0:
            raise RuntimeError(f"initdb failed (exit {rc}):\n{self._log_tail()}")

    def _start_postmaster(self) -> None:
        # The free port can be taken between probing and binding; retry a few times.
        for _attempt in range(3):
            self._port = _free_port()
            with open(self.log_path, "ab") as log:
                self._proc = self._popen(
                    [str(self.bindir / "postgres"), "-D", str(self._tmp / "data"),
                     "-p", str(self._port), "-k", str(self._tmp),
                     "-c", "listen_addresses=127.0.0.1",
                     # Throwaway data: skip durability work for speed.
                     "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"],
                    log,
                )
            if self._wait_ready():
                return
            # Retry only if the postmaster died because the port was taken meanwhile.
            if self._proc is not None or "could not bind" not in self._log_tail():
                break
        why = "exited" if self._proc is None else f"not ready within {START_TIMEOUT_S:.0f}s"
        raise RuntimeError(f"postgres failed to start ({why}); log tail:\n{self._log_tail()}")

    def _wait_ready(self) -> bool:
        """Poll until a real client session works; False if the postmaster died."""
        import adbc_driver_postgresql.dbapi as pg

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            try:
                with pg.connect(f"postgresql://{USER}@127.0.0.1:{self._port}/postgres") as conn:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchone()
                return True
            except Exception:  # refused / "the database system is starting up"
                time.sleep(0.1)
        return False

    def _create_database(self) -> None:
        import adbc_driver_postgresql.dbapi as pg

        # CREATE DATABASE cannot run inside a transaction block, hence autocommit.
        with pg.connect(f"postgresql://{USER}@127.0.0.1:{self._port}/postgres",
                        autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: abort sessions, clean exit
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()  # postgres children exit once the postmaster is gone
                proc.wait()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A started PostgresServer shared by the whole test session."""
    with PostgresServer() as server:
        yield server
