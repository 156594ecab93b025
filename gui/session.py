"""The edit session of one window: everything that happens around the document.

The Document (gui.document) holds what the artist edits and Undo undoes. The session holds the rest,
in one place a window, the timeline and later features read: the engine client and whether it is
ready (`engine`), the model in use and its state (`model_state`, `model`), the run in flight and the
previews, latents and decodes of the latest run (`run`), the live draft in flight or on screen
(`draft`: a run without its commit, `Engine.draft`, which writes nothing), the project's history of results
(`results`, `current_result`, `inversions`, `result_image`, and what the I/O thread made ready for
the screen), and the project-I/O worker that opens, saves, refreshes and prunes projects off the UI
thread (`io`, `io_busy`). As krita-ai-diffusion keeps its client, job queue and document apart, the
session turns the engine's typed events into state and signals and the window only renders them; it
reads the document through snapshots and changes it only by loading a project into it and marking it
saved.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QPainterPath, QPixmap

from gui import project_io
from gui.document import Document, DocumentState
from gui.io_worker import IoWorker, Task
from gui.project_io import OpenedProject, ProjectHistory, ResultEntry
from gui.qimage import Shown, mask_outline, mask_overlay, to_pixmap
from gui.theme import MASK_COLOUR
from gui.worker import EngineClient, EngineFactory, model_key

DECODES_KEPT = 64  # full decodes of timeline steps kept per run (at 512 px, 0.75 MB each)


@dataclass
class RunState:
    """What the engine is doing, as the status bar and timeline need it.

    Every step of the run that sent a preview keeps its cheap picture, its latent (`latents`, for a
    full VAE decode when the artist scrubs to it) and its timestep; full decodes are kept in
    `decoded`. `serial` tells one run's steps from the next's; `model` is the model options the run
    used (a decode needs them).
    """

    running: bool = False
    stage: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    previews: dict[str, dict[int, Image.Image]] = field(default_factory=dict)
    latents: dict[str, dict[int, Any]] = field(default_factory=dict)
    timesteps: dict[str, dict[int, int | None]] = field(default_factory=dict)
    decoded: dict[tuple[str, int], Image.Image] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    serial: int = 0
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class DraftState:
    """The live draft: the one asked for last (`serial`, made from the document `state`), whether it is
    in flight and how far, and what is on screen: its picture, or `note` saying why there is none
    (the settings need a run, or the draft failed)."""

    serial: int = 0
    state: DocumentState | None = None
    running: bool = False
    stage: str = ""
    step: int = 0
    total: int = 0
    image: Image.Image | None = None
    seconds: float = 0.0
    note: str = ""
    model: dict[str, Any] = field(default_factory=dict)


class EditSession(QObject):
    """The engine client, the model, the run, the project's history and the project-I/O worker."""

    runChanged = Signal()
    runFinished = Signal(object)  # the final event, once the session has taken it in
    draftChanged = Signal()  # the draft started, progressed, ended, was shown or cleared
    progressed = Signal(object)  # a Progress event of the run
    previewed = Signal(object)  # a Preview event of the run
    noticed = Signal(str)  # a Notice of the run
    stepDecoded = Signal(str, int, object)  # a step of the current run decoded in full
    modelChanged = Signal(str)  # the model's state changed; details (an error) or ""
    preloaded = Signal(object, str)  # a preload ended: its options, and why it failed ("" when it loaded)
    historyChanged = Signal()
    currentResultChanged = Signal()
    ioChanged = Signal(str)  # what the project-I/O worker is doing ("" when idle)
    failed = Signal(object, str)  # a background task that failed, and what it was doing

    def __init__(self, doc: Document, engine_factory: EngineFactory, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.engine = EngineClient(engine_factory, self)
        self.io = IoWorker(self)
        self.run = RunState()
        self.draft = DraftState()
        self._job = ""  # what the engine is doing for this session: "run", "draft" or ""
        self._queued_run: tuple[Path, DocumentState, dict[str, Any]] | None = None  # waits for a draft to stop
        self._draft_started = 0.0
        self._draft_in_flight = 0  # the serial of the draft the engine is making
        self._notices_said: set[str] = set()  # what the last drafts (or the run) said: not said again
        self._notices_heard: set[str] = set()  # what the draft in flight said
        self.model_state = "waiting for the engine"
        self.model: dict[str, Any] = {}  # the options of the model in use (or loading)
        self.device = ""  # the engine's device as the status bar names it ("CPU", "NVIDIA H100 (cuda:0)")
        self.unet_seconds: float | None = None  # one UNet evaluation of the model loaded (gui.estimate)
        self.tokenizer: Any = None
        self.results: list[ResultEntry] = []
        self.current_result = -1
        self.inversions = 0
        self.result_image: Image.Image | None = None
        self.shown = Shown()  # the photo and masks of the project opened, and its result, ready for the canvas
        self._result_shown = Shown()
        self.first_preview_s: float | None = None
        self.decode_latencies_s: list[float] = []  # from choosing a step to its full decode on screen
        self._run_started = 0.0
        self._decode_asked: dict[tuple, float] = {}
        self._scratch = tempfile.TemporaryDirectory(prefix="retake-gui-")
        self.engine.ready.connect(self._on_ready)
        self.engine.event.connect(self._on_event)
        self.engine.finished.connect(self._on_finished)
        self.engine.modelState.connect(self._on_preload_state)
        self.engine.decoded.connect(self._on_decoded)
        self.engine.status.connect(self._on_status)
        self.engine.unetTimed.connect(self._on_unet_timed)
        self.io.busyChanged.connect(self.ioChanged)
        doc.projectChanged.connect(self.engine.forget)  # what the engine keeps of the last project is not needed

    # -- the engine and the model -----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.engine.is_ready

    @property
    def running(self) -> bool:
        """A run (not a draft) is in flight or waits for the draft in flight to stop."""
        return (self.engine.busy and self._job == "run") or self._queued_run is not None

    @property
    def drafting(self) -> bool:
        return self.engine.busy and self._job == "draft"

    @property
    def io_busy(self) -> str:
        """What project I/O is in flight ("Saving house.retake"), "" when none."""
        return self.io.busy

    def preload(self, options: dict[str, Any], download: bool = False) -> None:
        """Load the model `options` name in the background; `model_state` and `modelChanged` follow it."""
        if model_key(options) != model_key(self.model):
            self.unet_seconds = None
        self.model = dict(options)
        self.engine.preload(options, download)

    @property
    def gpu(self) -> bool:
        """Whether the engine computes on a CUDA GPU (else the methods start with their fastest options)."""
        return "(cuda:" in self.device

    def _on_ready(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _on_status(self, status: dict) -> None:
        self.device = str(status.get("device", ""))

    def _on_unet_timed(self, options: dict[str, Any], seconds: float) -> None:
        """The engine timed one UNet evaluation of the model it loaded (kept only for the model in use)."""
        if model_key(options) == model_key(self.model):
            self.unet_seconds = seconds

    def _on_preload_state(self, state: str, details: str, options: dict[str, Any]) -> None:
        """A preload's state: whoever asked for it (gui.model_choice) hears how it ended in `preloaded`
        and decides what to say of a failure."""
        self._on_model_state(state, "")
        if state in ("loaded", "not loaded"):
            self.preloaded.emit(options, details)

    def _on_model_state(self, state: str, details: str) -> None:
        self.model_state = state
        self.modelChanged.emit(details)

    # -- runs ---------------------------------------------------------------------------------------
    def start_run(self, project: Path, state: DocumentState, options: dict[str, Any]) -> bool:
        """Send the document's state to the engine (False when it is not ready or already running); a
        draft in flight is cancelled and the run starts once it has stopped. The draft on screen goes."""
        if self.running or not self.engine.is_ready:
            return False
        self.clear_draft()
        if self.drafting:  # cancelled by clear_draft: the run starts when it has stopped
            self._queued_run = (project, state, dict(options))
            self.runChanged.emit()
            return True
        if self.engine.busy:
            return False
        self._job = "run"
        scratch = Path(self._scratch.name)
        self.run = RunState(running=True, serial=self.run.serial + 1, model=dict(options))
        self._decode_asked.clear()
        self._run_started = time.monotonic()
        self.first_preview_s = None
        started = self.engine.submit(lambda: project_io.build_request(project, state, options, scratch))
        self.runChanged.emit()
        return started

    def cancel(self) -> None:
        """Stop the run (a run waiting for a draft to stop is dropped)."""
        if self._queued_run is not None:
            self._queued_run = None
            self.runChanged.emit()
        if self._job == "run":
            self.engine.cancel()

    # -- live drafts --------------------------------------------------------------------------------
    def start_draft(self, project: Path, state: DocumentState, options: dict[str, Any]) -> bool:
        """Make a draft of the document's state (`Engine.draft`: the stored inversion only, nothing
        written); False when the engine is busy or not ready. Its picture is shown (`draft.image`) only
        if it is still the draft asked for last and the document still is `state` when it comes."""
        if self.engine.busy or not self.engine.is_ready:
            return False
        scratch = Path(self._scratch.name)
        self._job = "draft"
        self.draft.serial += 1
        self._draft_in_flight = self.draft.serial
        self.draft.state, self.draft.running = state, True
        self.draft.stage, self.draft.step, self.draft.total = "", 0, 0
        self.draft.model = dict(options)
        self._notices_heard = set()
        self._draft_started = time.monotonic()
        started = self.engine.submit(lambda: project_io.build_request(project, state, options, scratch,
                                                                      preview_every=0), draft=True)
        self.draftChanged.emit()
        return started

    def draft_is_current(self) -> bool:
        """A draft's picture is on screen and the document still is what it was made from: a Run now
        saves it without computing (Engine.run, which checks the same on what it is sent)."""
        draft = self.draft
        return draft.image is not None and draft.state is not None and self.doc.matches(draft.state)

    def cancel_draft(self) -> None:
        """Stop the draft in flight (its picture, if it still comes, is not shown)."""
        if self.drafting:
            self.draft.serial += 1  # whatever the draft in flight makes is stale now
            self.engine.cancel()

    def clear_draft(self) -> None:
        """Take the draft off the screen (a run, another project)."""
        self.cancel_draft()
        if self.draft.image is not None or self.draft.note:
            self.draft.image, self.draft.note = None, ""
            self.draftChanged.emit()

    def _on_draft_event(self, event: Any) -> None:
        from pipeline.events import Notice, Progress

        if isinstance(event, Progress):  # a draft's previews are not shown (a run's are)
            draft = self.draft
            self._on_loading(event, draft.model)
            draft.stage, draft.step, draft.total = event.stage, event.step, event.total
            self.draftChanged.emit()
        elif isinstance(event, Notice):  # said as a run's are, unless the drafts before said it already
            if event.message not in self._notices_said | self._notices_heard:
                self.noticed.emit(event.message)
            self._notices_heard.add(event.message)

    def _on_draft_finished(self, final: Any, serial: int) -> None:
        from pipeline.events import CancelledEvent, Drafted, Failed

        draft = self.draft
        draft.running = False
        if isinstance(final, CancelledEvent):  # it may have stopped before saying what the last one said
            self._notices_said |= self._notices_heard
        else:  # a notice this draft did not say is said again by the next draft that does
            self._notices_said = set(self._notices_heard)
        current = serial == draft.serial and draft.state is not None and self.doc.matches(draft.state)
        if current and isinstance(final, Drafted):
            draft.image, draft.note = final.image, ""
            draft.seconds = time.monotonic() - self._draft_started
        elif current and isinstance(final, Failed):
            draft.image, draft.note = None, final.message
        self.draftChanged.emit()
        if self._queued_run is not None:
            queued, self._queued_run = self._queued_run, None
            self.start_run(*queued)

    def run_seconds(self) -> float:
        return time.monotonic() - self._run_started

    def _on_event(self, event: Any) -> None:
        from pipeline.events import Notice, Preview, Progress

        if self._job == "draft":
            self._on_draft_event(event)
            return
        run = self.run
        if isinstance(event, Progress):
            if event.total > 1:
                run.totals[event.stage] = event.total
            self._on_loading(event, run.model)
            run.stage, run.step, run.total, run.eta_s = event.stage, event.step, event.total, event.eta_s
            self.progressed.emit(event)
        elif isinstance(event, Preview):
            if self.first_preview_s is None:
                self.first_preview_s = self.run_seconds()
            run.previews.setdefault(event.stage, {})[event.step] = event.image
            run.latents.setdefault(event.stage, {})[event.step] = event.latent
            run.timesteps.setdefault(event.stage, {})[event.step] = event.timestep
            run.totals.setdefault(event.stage, event.total)
            self.previewed.emit(event)
        elif isinstance(event, Notice):
            self.noticed.emit(event.message)
            self._notices_said.add(event.message)  # a draft of the same settings need not say it again
        self.runChanged.emit()

    def _on_loading(self, event: Any, options: dict[str, Any]) -> None:
        """A run or a draft loads the model `options` name: it is the model in use now."""
        from pipeline.events import Stage

        if event.stage == Stage.LOADING_MODEL:
            self.model = dict(options)
            self._on_model_state("loading…" if event.step < event.total else "loaded", "")

    def _on_finished(self, final: Any) -> None:
        from pipeline.events import Done

        job, self._job = self._job, ""
        if job == "draft":
            self._on_draft_finished(final, self._draft_in_flight)
            return
        self.run.running = False
        if isinstance(final, Done):
            self._on_model_state("loaded", "")
        self.runChanged.emit()
        if self.doc.project_path is None:
            self.runFinished.emit(final)
        else:  # the engine may have written an inversion or a result: the history first, then the news
            self.refresh(lambda _task: self.runFinished.emit(final))

    # -- timeline steps -----------------------------------------------------------------------------
    def step_picture(self, stage: str, step: int) -> Image.Image | None:
        """A step of the latest run as it can be shown now (its full decode if made, else its preview),
        asking the engine for the full decode when it has not been made (`stepDecoded` brings it)."""
        run = self.run
        preview = run.previews.get(stage, {}).get(step)
        if preview is None:
            return None
        full = run.decoded.get((stage, step))
        if full is None:
            key = (run.serial, stage, step)
            self._decode_asked[key] = time.monotonic()
            self.engine.decode(key, run.model, run.latents.get(stage, {}).get(step))
        return full or preview

    def _on_decoded(self, key: tuple, image: Any) -> None:
        serial, stage, step = key
        run = self.run
        if serial != run.serial:
            return  # a step of an earlier run
        run.decoded[(stage, step)] = image
        while len(run.decoded) > DECODES_KEPT:
            run.decoded.pop(next(iter(run.decoded)))
        if (asked := self._decode_asked.pop(key, None)) is not None:
            self.decode_latencies_s.append(time.monotonic() - asked)
        self.stepDecoded.emit(stage, step, image)

    # -- the project's history ------------------------------------------------------------------------
    def result(self) -> ResultEntry | None:
        return self.results[self.current_result] if self.current_result >= 0 else None

    def set_history(self, history: ProjectHistory) -> None:
        """Show a project's history; its newest result becomes current."""
        self.results, self.inversions = list(history.results), history.inversions
        self.current_result = len(self.results) - 1
        self.result_image, self._result_shown = history.newest, history.shown
        self.historyChanged.emit()
        self.currentResultChanged.emit()

    def set_current_result(self, index: int) -> None:
        """Show another result of the history (its picture is read on the I/O thread) instead of a draft."""
        index = index if -1 <= index < len(self.results) else -1
        if index == self.current_result:
            return
        self.clear_draft()  # the artist asked to see that result
        self.current_result, self.result_image = index, None
        self.currentResultChanged.emit()
        if index >= 0 and (project := self.doc.project_path) is not None:
            entry = self.results[index]

            def read() -> tuple[Image.Image | None, Shown]:
                picture = project_io.read_result(project, entry.edit_id)
                return picture, Shown(() if picture is None else (picture,))

            self.io.submit(f"Reading {entry.path.name}", read, lambda task: self._on_result_read(index, task),
                           exclusive=False)

    def _on_result_read(self, index: int, task: Task) -> None:
        if index == self.current_result and task.ok:
            self.result_image, self._result_shown = task.result
            self.currentResultChanged.emit()

    def pixmap(self, picture: Image.Image) -> QPixmap:
        """A picture the canvas shows, from what the I/O thread prepared for it when it read it."""
        return self._result_shown.pixmap(picture) or self.shown.pixmap(picture) or to_pixmap(picture)

    def mask_layers(self, mask: np.ndarray) -> tuple[QImage, QPainterPath]:
        """A mask's fill and outline for the canvas, prepared on the I/O thread when it was opened."""
        return self.shown.mask(mask) or (mask_overlay(mask, MASK_COLOUR), mask_outline(mask))

    def refresh(self, then: Callable[[Task], None] | None = None) -> Task:
        """Re-read the project's history (after a run, a prune, a copy) on the I/O thread; the newest
        result becomes current. A failure is said (`failed`); `then(task)` runs either way."""
        path = self.doc.project_path
        assert path is not None
        known = {entry.path: entry.thumbnail for entry in self.results if entry.thumbnail is not None}

        def done(task: Task) -> None:
            if task.ok and path == self.doc.project_path:
                self.set_history(task.result)
            elif not task.ok:
                self.failed.emit(task, f"reading the history of {path.name}")
            if then is not None:
                then(task)

        return self.io.submit(f"Reading {path.name}", lambda: project_io.read_history(path, known), done,
                              exclusive=False)

    # -- project I/O ----------------------------------------------------------------------------------
    def open(self, path: Path, projects_dir: str, new_params: Mapping[str, Any]) -> Task:
        """Open what `path` names (a project folder, or a photo whose project is found or made) on the
        I/O thread; once read, the document and the history show it."""
        def work() -> OpenedProject:
            folder = path if path.is_dir() else project_io.project_for_image(path, projects_dir)
            return project_io.open_project(folder, new_params)

        def done(task: Task) -> None:
            if task.ok:
                opened: OpenedProject = task.result
                self.clear_draft()
                self._notices_said = set()
                self.run = RunState(serial=self.run.serial + 1)
                self.shown = opened.shown
                self.doc.load(opened.path, opened.image, opened.state)
                self.set_history(opened.history)
                self.runChanged.emit()

        return self.io.submit(f"Opening {path.name}", work, done)

    def save(self, on_done: Callable[[Task], None] | None = None) -> Task:
        """Write the document as it stands now into its project, on the I/O thread; the document is marked
        saved if it still is what was written (an edit meanwhile stays unsaved), then `on_done(task)` runs."""
        path = self.doc.project_path
        assert path is not None
        state = self.doc.snapshot()

        def done(task: Task) -> None:
            if task.ok and path == self.doc.project_path and self.doc.matches(state):
                self.doc.mark_saved()
            if on_done is not None:
                on_done(task)

        return self.io.submit(f"Saving {path.name}", lambda: project_io.save_document(path, state), done)

    def shutdown(self) -> None:
        """The window is closing: stop a run, finish the project I/O in flight, stop the threads."""
        self.engine.shutdown()
        self.io.shutdown()
        self._scratch.cleanup()

