"""What the engine tells its caller, and how the caller stops it.

Events are plain dataclasses so a terminal, a Qt worker or a batch script can render them as they
like; nothing here knows about any of them. A CancelToken is shared between the caller's thread and
the computing thread and is checked at every inner step (every UNet call).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.errors import Cancelled


class Stage(enum.StrEnum):
    """Every stage a run reports; the value is the label shown to people (and compares equal to it).

    Methods that add a stage (a tuning or optimisation loop) add its member here.
    """

    RESOLVING = "checking the request"
    LOADING_MODEL = "loading the model"
    ENCODING = "encoding the photo"
    DDIM_INVERSION = "DDIM inversion"
    NULL_TEXT = "null-text inversion"
    KV_TUNING = "KV tuning"
    TEXT_OPTIMISATION = "text optimisation"
    REFERENCE_INVERSION = "reference inversion"
    VALUE_MAPPING = "training the mapping networks"
    EDITING = "editing"
    DECODING = "decoding the result"
    SAVING = "saving"


@dataclass(frozen=True)
class Progress:
    """`step` of `total` units of `stage` are done; `eta_s` estimates what is left of the stage."""

    stage: Stage
    step: int
    total: int
    eta_s: float | None


@dataclass(frozen=True)
class Preview:
    """The image the edit is heading for at `step`: a quick picture of the predicted clean latent of the
    target, and that latent itself ([1, C, h, w], fp16 on the CPU) for a full decode on demand
    (`Engine.decode`). `timestep` is the model's timestep at that step (its noise level), so a front
    end can place the step between noise and clean whichever way its loop walks the schedule."""

    stage: Stage
    step: int
    total: int
    image: Image.Image
    latent: Any = None
    timestep: int | None = None


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the run (a prompt cut at the encoder's window)."""

    message: str


@dataclass(frozen=True)
class Done:
    """The edit was written: `result_path` inside the project, `output_path` where asked for.
    `from_draft`: the result is the last draft's, committed without editing again (Engine.run)."""

    result_path: Path
    output_path: Path | None
    project_path: Path
    edit_id: str
    reused_inversion: bool
    image: Image.Image
    from_draft: bool = False


@dataclass(frozen=True)
class Drafted:
    """A draft edit (`Engine.draft`): the result a run of the same request would commit, written nowhere."""

    image: Image.Image
    inversion_key: str


@dataclass(frozen=True)
class Failed:
    """The run stopped on an error; `message` is one sentence for the user.

    `kind` names what failed: the RetakeError class of the cause (`ImageError`, `PromptError`,
    `ParamError`, `ProjectError`, `ModelError`, `OutOfMemoryError`), or `internal` for a bug; a batch
    tells a photo that will fail again the same way from one worth another try by it.
    """

    message: str
    kind: str = "internal"


@dataclass(frozen=True)
class CancelledEvent:
    """The run stopped because the user asked; nothing half-made was written."""

    stage: str


Event = Progress | Preview | Notice | Done | Drafted | Failed | CancelledEvent
Emit = Callable[[Event], None]


class CancelToken:
    """Thread-safe cancellation flag; `check()` raises Cancelled once `cancel()` was called."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("The run was cancelled; nothing was written.")


class StageClock:
    """An event sink that times each stage from its first Progress event to the next stage's (a batch's
    report and the semantic benchmark record where a run's seconds went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._since = 0.0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress) and event.stage != self._stage:
            self.stop()
            self._stage, self._since = str(event.stage), time.perf_counter()

    def stop(self) -> None:
        """End the stage being timed (call once the run is over)."""
        if self._stage is not None:
            self.seconds[self._stage] = round(self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._since, 3)
            self._stage = None

