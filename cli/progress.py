"""Engine events rendered on a terminal: a progress bar with ETA per stage, or plain lines in logs.

Output that is not a terminal (a pipe, a log file, a batch scheduler) cannot redraw a bar, yet a
twenty-minute inversion must not look hung: it gets one line when a stage starts, then one at
every tenth of the stage or every 30 seconds, whichever comes first, and one when it is done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from pipeline.events import Event, Notice, Progress

LOG_EVERY_FRACTION = 0.1
LOG_EVERY_S = 30.0


class Cadence:
    """When a log's next line is due: once a count reaches the next tenth of its total, or LOG_EVERY_S
    after the last line, whichever comes first (a stage's steps here, a batch's photos in
    cli/batch_progress.py)."""

    def __init__(self) -> None:
        self._next_count = 0
        self._next_time = 0.0

    def due(self, count: int, now: float) -> bool:
        return count >= self._next_count or now >= self._next_time

    def logged(self, count: int, total: int, now: float) -> None:
        """A line was written at `count` of `total`, at time `now`."""
        tenth = max(1, round(total * LOG_EVERY_FRACTION))
        self._next_count = (count // tenth + 1) * tenth
        self._next_time = now + LOG_EVERY_S


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class TerminalProgress:
    """Callable event sink: redraws one bar per stage on a TTY; prints lines at a steady cadence otherwise.

    `stage` is the stage of the latest progress event, for messages about where a run stopped.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr  # looked up now: tests and wrappers replace sys.stderr
        self.width = width
        self.interactive = self.stream.isatty()
        self.stage = "start-up"
        self._clock = clock
        self._bar_open = False
        self._cadence = Cadence()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self._line(f"note: {event.message}")
        if not isinstance(event, Progress):
            return
        started = event.stage != self.stage or event.step == 0
        self.stage = event.stage
        if self.interactive:
            self._draw_bar(event)
        else:
            self._log(event, started)

    def _draw_bar(self, event: Progress) -> None:
        filled = self.width * event.step // max(event.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{event.stage:>20} [{bar}] {event.step}/{event.total} ETA {eta_text(event.eta_s)}")
        self._bar_open = event.step < event.total
        if not self._bar_open:
            self.stream.write("\n")
        self.stream.flush()

    def _log(self, event: Progress, started: bool) -> None:
        now = self._clock()
        if event.step >= event.total:
            self._line(f"{event.stage}: {event.total}/{event.total} done")
            return
        if not (started or self._cadence.due(event.step, now)):
            return
        if started:
            self._line(f"{event.stage}: started, {event.total} step{'s' if event.total != 1 else ''}")
        else:
            percent = 100 * event.step // max(event.total, 1)
            self._line(f"{event.stage}: {event.step}/{event.total} ({percent}%), ETA {eta_text(event.eta_s)}")
        self._cadence.logged(event.step, event.total, now)

    def close(self) -> None:
        """End a bar still being drawn, so that the next line (an error, "cancelled") starts clean."""
        if self._bar_open:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_open = False

    def _line(self, text: str) -> None:
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()
