"""A running batch on a terminal, in a log, or as JSON lines for the desktop app (pipeline.batch.progress).

As cli/progress.py does for one edit: on a terminal one status line is redrawn (done, failed, rate,
time left, what each worker is on) and every failure is printed above it; in a log (a pipe, a file,
a scheduler) each finished photo is one line and the status one line every tenth of the batch or 30
seconds, whichever comes first, so a batch of ten hours neither floods the log nor looks hung.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from cli.progress import Cadence, eta_text
from pipeline.batch.progress import BatchEvent, BatchStatus, PhotoFinished, WorkerState, to_json


def status_text(status: BatchStatus) -> str:
    """`12/40 done, 1 failed, 3.2 photos/min, ETA 8:45`."""
    rate = f", {status.rate_per_min:.1f} photos/min" if status.rate_per_min else ""
    eta = f", ETA {eta_text(status.eta_s)}" if status.eta_s is not None and status.done + status.failed else ""
    failed = f", {status.failed} failed" if status.failed else ""
    return f"{status.done + status.failed}/{status.total} finished{failed}{rate}{eta}"


def worker_text(worker: WorkerState) -> str:
    if not worker.photo:
        return f"{worker.worker}: {worker.stage or 'waiting'}"
    steps = f" {worker.step}/{worker.total}" if worker.total else ""
    return f"{worker.worker}: {worker.photo} {worker.stage}{steps}"


class BatchProgress:
    """Callable sink of batch events for the terminal or a log (see the module docstring)."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self._clock = clock
        self._open = False
        self._cadence = Cadence()
        self._phase = ""

    def __call__(self, event: BatchEvent) -> None:
        if isinstance(event, PhotoFinished):
            if event.status == "failed":
                self._line(f"failed: {event.name}: {event.reason}")
            elif not self.interactive:
                self._line(f"done: {event.name} ({event.seconds:.1f} s, {event.worker})")
            return
        if self.interactive:
            self._redraw(event)
        else:
            self._log(event)

    def _redraw(self, status: BatchStatus) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        text = f"{status.phase}: {status_text(status)}"
        if status.workers:
            text += " | " + " | ".join(worker_text(w) for w in status.workers)
        self.stream.write("\r" + text[: width - 1].ljust(width - 1))
        self.stream.flush()
        self._open = True

    def _log(self, status: BatchStatus) -> None:
        finished, now = status.done + status.failed, self._clock()
        if status.phase == self._phase and not self._cadence.due(finished, now):
            return
        self._phase = status.phase
        workers = "; ".join(worker_text(w) for w in status.workers)
        self._line(f"batch {status.phase}: {status_text(status)}" + (f"; {workers}" if workers else ""))
        self._cadence.logged(finished, status.total, now)

    def close(self) -> None:
        """End the status line, so that the next line starts clean."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def _line(self, text: str) -> None:
        if self._open:
            self.stream.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r")
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()


class JsonProgress:
    """Every event as one JSON object per line (`--progress json`), what the desktop app reads."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: BatchEvent) -> None:
        self.stream.write(json.dumps(to_json(event)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass
