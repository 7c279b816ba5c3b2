"""Progress of a run: lines in Dagster's run log, and a bar (or plain lines) for `retl sync`.

Data flows one way. In the sync asset, `ProgressReporter` turns `run_sync`'s
`progress(done, total)` calls into `context.log.info` lines, at most one every
`RETL_PROGRESS_EVERY_S` seconds (default 5), each carrying its numbers in the record's
`retl_progress` extra. `retl sync` runs the job in process with `progress_logger(view)`, a
Dagster logger that hands those numbers (and the model's "extracted N rows" line) to a
`ProgressView`, which draws a bar on a terminal and prints plain lines elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from dagster import LoggerDefinition

EXTRA = "retl_progress"  # the log record attribute holding a progress line's numbers
EVERY_S = 5.0
EXTRACTED = re.compile(r"^model (?P<model>\S+): extracted (?P<rows>\d+) rows")  # factory's line


def every_s() -> float:
    """Seconds between progress lines; RETL_PROGRESS_EVERY_S changes it (demos, tests)."""
    try:
        return max(0.0, float(os.environ.get("RETL_PROGRESS_EVERY_S", EVERY_S)))
    except ValueError:
        return EVERY_S


@dataclass(frozen=True)
class Tick:
    sync: str
    done: int  # records the destination has answered for so far
    total: int  # the run's work rows
    per_s: float  # records answered per second since the sync started

    @property
    def share(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        return (f"sync {self.sync}: {self.done:,}/{self.total:,} records answered "
                f"({self.share:.0%}), {self.per_s:,.0f} records/s")


class ProgressReporter:
    """`progress(done, total)` for one sync's run, as throttled Dagster log lines."""

    def __init__(self, log: logging.Logger, sync: str, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._sync, self._clock = log, sync, clock
        self._every = every_s() if every is None else every
        self._started = clock()
        self._said: float | None = None
        self._last: tuple[int, int] | None = None
        self._last_said: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        if total == 0:
            return  # nothing to send: the sync's own summary line says so
        self._last = (done, total)
        now = self._clock()
        if self._said is None or now - self._said >= self._every:
            self._say(now)

    def finish(self) -> None:
        """The last count, unless the last line already said it."""
        if self._last is not None and self._last != self._last_said:
            self._say(self._clock())

    def _say(self, now: float) -> None:
        done, total = self._last or (0, 0)
        elapsed = now - self._started
        tick = Tick(self._sync, done, total, done / elapsed if elapsed > 0 else 0.0)
        self._said, self._last_said = now, self._last
        self._log.info(tick.line(), extra={EXTRA: tick.__dict__})


class ProgressView:
    """What `retl sync` shows: a bar redrawn in place on a terminal; elsewhere a plain line
    per tick it is given, at most every `every` seconds unless a tenth more is done."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 every: float = EVERY_S, width: int = 30,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._every, self._width, self._clock = every, width, clock
        self._extracted: dict[str, int] = {}
        self._printed: dict[str, tuple[float, int]] = {}  # sync -> (when, tenths done)
        self._drawn = 0  # characters of the bar now on the line

    def extracted(self, model: str, rows: int) -> None:
        self._extracted[model] = rows
        self._clear()
        self._write(f"model {model}: {rows:,} rows extracted\n")

    def tick(self, tick: Tick) -> None:
        if self.tty:
            self._draw(tick)
            return
        now, tenths = self._clock(), int(tick.share * 10)
        when, before = self._printed.get(tick.sync, (None, -1))
        if when is None or now - when >= self._every or tenths > before:
            self._printed[tick.sync] = (now, tenths)
            self._write(tick.line() + "\n")

    def close(self) -> None:
        if self._drawn:
            self._write("\n")
            self._drawn = 0

    def bar(self, tick: Tick) -> str:
        filled = int(tick.share * self._width)
        return (f"{tick.sync} [{'#' * filled}{'.' * (self._width - filled)}] "
                f"{tick.done:,}/{tick.total:,} records {tick.share:4.0%}  "
                f"{tick.per_s:,.0f} records/s")

    def _draw(self, tick: Tick) -> None:
        text = self.bar(tick)
        # Pad over a longer earlier bar; `\r` goes back to the line's start.
        self._write("\r" + text.ljust(self._drawn))
        self._drawn = len(text)
        if tick.done >= tick.total:
            self.close()

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class _ToView(logging.Handler):
    """A Dagster logger's handler: progress records to the view, everything else ignored."""

    def __init__(self, view: ProgressView):
        super().__init__(logging.INFO)
        self._view = view

    def emit(self, record: logging.LogRecord) -> None:
        numbers = getattr(record, EXTRA, None)
        if isinstance(numbers, dict):
            self._view.tick(Tick(**numbers))
            return
        meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
        found = EXTRACTED.match(str(meta.get("orig_message") or ""))
        if found:
            self._view.extracted(found["model"], int(found["rows"]))


def progress_logger(view: ProgressView) -> LoggerDefinition:
    """A Dagster logger for in-process runs that draws their progress on `view`; add it to
    the job's loggers and to run config `loggers` as `retl_progress`."""

    def build(_init_context) -> logging.Logger:
        # A logger of this run's own, not the process-wide one getLogger would share.
        logger = logging.Logger("retl_progress", logging.INFO)  # noqa: LOG001
        logger.addHandler(_ToView(view))
        return logger

    return LoggerDefinition(build, description="retl sync's progress bar")


__all__ = ["EXTRA", "ProgressReporter", "ProgressView", "Tick", "every_s", "progress_logger"]
