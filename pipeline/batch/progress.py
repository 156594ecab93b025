"""What a running batch tells its front end: a status snapshot about once a second, and each edit that ends.

Plain dataclasses, like pipeline.events, so the CLI (cli/batch_progress.py: a bar on a terminal,
steady lines in a log, JSON lines for the window) and the window's dialog render the same facts.
`to_json`/`from_json` carry them through the JSON-lines stream the window reads from `retake batch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerState:
    """One worker as last seen: where it runs and what it is doing."""

    worker: str
    device: str = ""
    host: str = ""
    pid: int = 0
    photo: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    done: int = 0


@dataclass(frozen=True)
class BatchStatus:
    """The whole batch now. `total` counts this run's edits; `earlier` those a previous run finished."""

    phase: str
    total: int
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    earlier: int = 0
    elapsed_s: float = 0.0
    rate_per_min: float | None = None
    eta_s: float | None = None
    workers: tuple[WorkerState, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PhotoFinished:
    """One edit ended: `status` done or failed (with its one-sentence `reason`)."""

    name: str
    status: str
    seconds: float
    worker: str
    reason: str = ""
    attempts: int = 1


BatchEvent = BatchStatus | PhotoFinished
BatchEmit = Callable[[BatchEvent], None]


class RateMeter:
    """Edits per minute since the first worker was ready, and the time the rest will take at that rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None
        self.count = 0

    def start(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def add(self, n: int = 1) -> None:
        self.count += n

    def rate_per_min(self) -> float | None:
        if self._since is None or self.count == 0:
            return None
        return 60.0 * self.count / max(self._clock() - self._since, 1e-6)

    def eta_s(self, remaining: int) -> float | None:
        rate = self.rate_per_min()
        return None if rate is None else 60.0 * remaining / rate


def to_json(event: BatchEvent) -> dict[str, Any]:
    return {"event": type(event).__name__, **asdict(event)}


def from_json(data: dict[str, Any]) -> BatchEvent:
    """An event from its JSON form (KeyError or TypeError when it is not one)."""
    values = {k: v for k, v in data.items() if k != "event"}
    if data["event"] == "PhotoFinished":
        return PhotoFinished(**values)
    if data["event"] != "BatchStatus":
        raise KeyError(data["event"])
    values["workers"] = tuple(WorkerState(**w) for w in values.get("workers", ()))
    return BatchStatus(**values)
