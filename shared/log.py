"""Structured logging: JSON lines for machines, one readable line for people."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pythonjsonlogger.json import JsonFormatter

REPEAT_LIMIT = 10
"""Warnings or errors of one logger and message template let through per window..."""
REPEAT_WINDOW = 10.0
"""...of this many seconds; the rest are counted, and the count is logged."""


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0


class RepeatedLines(logging.Filter):
    """Lets a repeated warning through a few times per window, then counts it.

    An outage makes the same line by the thousand a second (a broker that is down, seen
    by every client on every retry), which fills disks and buries the first line that
    said what happened. A record is "the same" when its logger and message template (the
    format string before its arguments) are. The last record let through in a window
    says that more will be suppressed; the first one of the next window says how many
    were. INFO and below pass untouched: the access log and the lifecycle lines are
    never thinned.
    """

    def __init__(
        self,
        limit: int = REPEAT_LIMIT,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.limit = limit
        self.window = window
        self.clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self.clock()
        key = (record.name, str(record.msg))
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window:
            if len(self._windows) > 1000:
                self._forget_before(now - self.window)
            suppressed = window.suppressed if window is not None else 0
            window = self._windows[key] = _Window(now)
            if suppressed:
                _append(
                    record,
                    f" [{suppressed} more like this were suppressed since the last one logged]",
                )
        window.count += 1
        if window.count < self.limit:
            return True
        if window.count == self.limit:
            _append(record, f" [repeated; more like this are suppressed for {self.window:g}s]")
            return True
        window.suppressed += 1
        return False

    def _forget_before(self, moment: float) -> None:
        """Windows that ended are only kept for their count; drop those with nothing."""
        for key, window in list(self._windows.items()):
            if window.start < moment and not window.suppressed:
                del self._windows[key]


def _append(record: logging.LogRecord, note: str) -> None:
    record.msg = record.getMessage() + note
    record.args = None


def configure_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger (ours, uvicorn's, aiokafka's) through one handler."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)-5s %(name)s: %(message)s")
        )
    handler.addFilter(RepeatedLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
