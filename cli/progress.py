"""Engine events rendered on a terminal: a progress bar with ETA per stage, or plain lines in logs."""

from __future__ import annotations

import sys
from typing import TextIO

from pipeline.events import Event, Progress


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class TerminalProgress:
    """Callable event sink: redraws one bar per stage on a TTY; prints each finished stage otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.interactive = stream.isatty()

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Progress):
            return
        finished = event.step == event.total
        if self.interactive:
            filled = self.width * event.step // max(event.total, 1)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{event.stage:>20} [{bar}] {event.step}/{event.total} ETA {_clock(event.eta_s)}")
            if finished:
                self.stream.write("\n")
            self.stream.flush()
        elif finished:
            self.stream.write(f"{event.stage}: {event.total}/{event.total} done\n")
