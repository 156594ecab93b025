"""The engine runs in a worker thread; the window talks to it through EngineClient's signals.

As in superqt's thread workers and krita-ai-diffusion's Client, the computing code stays plain
Python (pipeline.engine) and the worker only turns its events into Qt signals, which Qt queues
onto the UI thread. The UI thread never runs torch: even importing the pipeline (torch, diffusers,
several seconds) happens here, so the window is usable at once and learns when the engine is ready.
The engine keeps its model loaded between runs, so a re-edit costs only the edit. Full decodes of
timeline steps run here too; while the artist drags the scrubber only the newest one asked for is
decoded (`Latest`). During a run the one asked for is decoded between two steps, on this thread from
the run's progress callback: the UNet is not in use then, the engine's lock is re-entrant, and a decode
(the VAE under no_grad, in fp32) touches nothing the run reads; the run waits for that one decode.
"""

from __future__ import annotations

import gc
import logging
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from gui.threads import stop_with
from pipeline.collector import keep_out_of_collections

if TYPE_CHECKING:  # the pipeline (torch) is imported on the worker thread, never by the window's modules
    from pipeline.engine import EditEngine
    from pipeline.request import EditRequest

log = logging.getLogger(__name__)
EngineFactory = Callable[[], "EditEngine"]


def real_engine() -> EditEngine:
    from pipeline.engine import Engine

    return Engine()


def device_summary(device: Any = None) -> dict[str, Any]:
    """The device (the loaded model's, else the default one) and GPU memory as the status bar shows
    them, and whether it is a GPU (called on the worker thread)."""
    import torch

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return {"device": device.type.upper(), "memory": "GPU memory: n/a", "gpu": False}
    index = device.index if device.index is not None else torch.cuda.current_device()
    used = torch.cuda.memory_allocated(index) / 2**30
    total = torch.cuda.get_device_properties(index).total_memory / 2**30
    return {"device": f"{torch.cuda.get_device_name(index)} (cuda:{index})",
            "memory": f"GPU memory: {used:.1f} / {total:.0f} GiB", "gpu": True}


def model_key(options: dict[str, Any]) -> tuple:
    """What decides which model the engine holds: the model, device and precision options."""
    return options.get("model"), options.get("device"), options.get("dtype")


class Latest:
    """The newest value put in, taken once (a thread-safe slot of one): older ones are dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = None

    def put(self, value: Any) -> None:
        with self._lock:
            self._value = value

    def take(self) -> Any:
        with self._lock:
            value, self._value = self._value, None
            return value


class EngineWorker(QObject):
    """Lives on the worker thread: imports the pipeline, loads the model, runs one request at a time."""

    ready = Signal(object)
    loadFailed = Signal(str)
    event = Signal(object)
    finished = Signal(object)
    status = Signal(dict)
    modelState = Signal(str, str, object)  # state, details, the options of the model preloaded
    decoded = Signal(object, object)  # the key it was asked under, the picture
    unetTimed = Signal(object, float)  # the options of the model loaded, seconds of one UNet evaluation

    def __init__(self, engine_factory: EngineFactory, decodes: Latest) -> None:
        super().__init__()
        self._factory = engine_factory
        self._engine: Any = None
        self._decodes = decodes
        self._loaded: tuple | None = None  # the model_key of the model the engine holds
        self._models_loaded = 0

    @Slot()
    def start_up(self) -> None:
        gc.disable()  # importing torch and diffusers makes millions of objects: no collections meanwhile
        try:
            from pipeline.tokenizer import load_clip_tokenizer

            self._engine = self._factory()
            tokenizer = load_clip_tokenizer()
            keep_out_of_collections()
            self.status.emit(device_summary())
            self.ready.emit(tokenizer)
        except Exception as error:  # noqa: BLE001 - shown to the user, with the traceback as details
            log.exception("engine start-up failed")
            self.loadFailed.emit(f"The engine could not start ({type(error).__name__}: {error}).\n\n"
                                 + traceback.format_exc())
        finally:
            gc.enable()

    @Slot(object, bool)
    def preload(self, options: dict, download: bool) -> None:
        """Load the model now (Engine.preload), so the first edit does not wait for it; `download`
        fetches a Hugging Face id first (only when the artist asked for it)."""
        from pipeline.errors import RetakeError

        self.modelState.emit("downloading…" if download else "loading…", "", options)
        if self._models_loaded and self._loaded != model_key(options):
            gc.unfreeze()  # the model loaded before may go now, cycles and all
        self._loaded = None
        model, device, dtype = model_key(options)
        try:
            if download:
                self._engine.preload(model, device, dtype, allow_download=True)
            bundle = self._engine.preload(model, device, dtype)
        except RetakeError as error:
            self.modelState.emit("not loaded", str(error), options)
            return
        except Exception as error:  # noqa: BLE001 - a bug or a broken model file; the user sees it
            log.exception("model preload failed")
            self.modelState.emit("not loaded", f"The model could not be loaded ({type(error).__name__}: {error}).",
                                 options)
            return
        finally:
            keep_out_of_collections()
        self._models_loaded += 1
        self._loaded = model_key(options)
        self.status.emit(device_summary(getattr(bundle, "device", None)))
        self.modelState.emit("loaded", "", options)
        self._time_unet(bundle, options)

    def _time_unet(self, bundle: Any, options: dict) -> None:
        """Time one UNet evaluation of the model just loaded, the unit of the window's estimate of a run
        (gui.estimate); a bundle that cannot be timed (a test's stand-in) leaves the estimate out."""
        from pipeline.speed import unet_seconds

        try:
            seconds = unet_seconds(bundle)
        except Exception as error:  # noqa: BLE001 - only the estimate is lost; the log says why
            log.info("the UNet was not timed (%s: %s); runs are not estimated", type(error).__name__, error)
            return
        self.unetTimed.emit(options, seconds)

    @Slot(object, object, bool)
    def run(self, make_request: Callable[[], EditRequest], cancel: Any, draft: bool) -> None:
        """Build the request (its inputs are written as files here, not on the UI thread) and run it, or
        make its draft (`Engine.draft`: nothing written)."""
        from pipeline.events import Failed, Progress, Stage

        try:
            request = make_request()
        except Exception as error:  # noqa: BLE001 - a full scratch disk, or a bug: the run fails, said
            log.exception("building the request failed")
            self.finished.emit(Failed(f"The edit could not be started ({type(error).__name__}: {error})."))
            return
        options = {"model": request.model, "device": request.device, "dtype": request.dtype}

        def emit(event: Any) -> None:
            if isinstance(event, Progress) and event.stage == Stage.LOADING_MODEL:
                self._loaded = model_key(options) if event.step == event.total else None
            self.event.emit(event)
            if isinstance(event, Progress) and event.step and event.stage != Stage.LOADING_MODEL:
                self.decode()  # between two steps, on this thread: a scrubbed step need not wait for the run

        final = (self._engine.draft if draft else self._engine.run)(request, emit, cancel)
        self.status.emit(device_summary(request.device))
        self.finished.emit(final)

    @Slot()
    def forget(self) -> None:
        """The window closed its project: the engine drops what it keeps of it (Engine.forget)."""
        self._engine.forget()

    @Slot()
    def decode(self) -> None:
        """Decode the newest step asked for in full, with the model the engine holds; a step of a run
        made with another model is left as its preview (the model is not reloaded for it)."""
        wanted = self._decodes.take()
        if wanted is None:
            return
        key, options, latent = wanted
        if self._loaded != model_key(options):
            return
        try:
            bundle = self._engine.preload(*model_key(options))
            self.decoded.emit(key, self._engine.decode(bundle, latent))
        except Exception:  # noqa: BLE001 - the preview stays on screen; the log keeps the reason
            log.exception("full decode of a step failed")


class EngineClient(QObject):
    """The window's handle on the engine: submit a request, cancel it, hear its events."""

    ready = Signal(object)
    loadFailed = Signal(str)
    event = Signal(object)
    finished = Signal(object)
    status = Signal(dict)
    modelState = Signal(str, str, object)  # state, details, the options of the model preloaded
    unetTimed = Signal(object, float)
    busyChanged = Signal(bool)
    decoded = Signal(object, object)
    _startUp = Signal()
    _run = Signal(object, object, bool)
    _preload = Signal(object, bool)
    _decode = Signal()
    _forget = Signal()

    def __init__(self, engine_factory: EngineFactory = real_engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.busy = False
        self.is_ready = False
        self._cancel: list[Any] = [None]  # the run's CancelToken, in a box the thread's finalizer shares
        self._thread = QThread()
        self._thread.setObjectName("retake-engine")
        self._decodes = Latest()
        self._worker = EngineWorker(engine_factory, self._decodes)
        self._worker.moveToThread(self._thread)
        self._startUp.connect(self._worker.start_up)
        self._run.connect(self._worker.run)
        self._preload.connect(self._worker.preload)
        self._decode.connect(self._worker.decode)
        self._forget.connect(self._worker.forget)
        self._worker.decoded.connect(self.decoded)
        self._worker.modelState.connect(self.modelState)
        self._worker.unetTimed.connect(self.unetTimed)
        self._worker.ready.connect(self._on_ready)
        self._worker.loadFailed.connect(self.loadFailed)
        self._worker.event.connect(self.event)
        self._worker.status.connect(self.status)
        self._worker.finished.connect(self._on_finished)
        self._thread.start()
        self._stop = stop_with(self, self._thread, lambda box=self._cancel: box[0] and box[0].cancel(), 10_000)
        self._startUp.emit()

    def submit(self, make_request: Callable[[], EditRequest], draft: bool = False) -> bool:
        """Start a run of the request `make_request()` builds on the worker thread (its draft, with
        `draft`); False when the engine is not ready or already busy."""
        if self.busy or not self.is_ready:
            return False
        from pipeline.events import CancelToken

        self._cancel[0] = CancelToken()
        self._set_busy(True)
        self._run.emit(make_request, self._cancel[0], draft)
        return True

    def preload(self, options: dict[str, Any], download: bool = False) -> None:
        """Load the model in the background (queued behind any run); `download` fetches it first."""
        if self.is_ready:
            self._preload.emit(dict(options), download)

    def decode(self, key: Any, options: dict[str, Any], latent: Any) -> None:
        """Ask for a full decode of a step's latent; `decoded` answers with `key`. Only the newest
        request still waiting is decoded."""
        if self.is_ready and latent is not None:
            self._decodes.put((key, dict(options), latent))
            self._decode.emit()

    def forget(self) -> None:
        """The window closed its project (or opened another): the engine drops the inversion, tuning and
        draft it keeps of it in memory, after the job in flight (queued on the engine's thread)."""
        if self.is_ready:
            self._forget.emit()

    def cancel(self) -> None:
        """Ask the run to stop; it does before its next UNet call (the token is thread-safe)."""
        if self._cancel[0] is not None:
            self._cancel[0].cancel()

    def shutdown(self) -> None:
        """Cancel a run and stop the thread (waiting up to 10 s for the run to reach its next step)."""
        self._stop()

    def _on_ready(self, tokenizer: Any) -> None:
        self.is_ready = True
        self.ready.emit(tokenizer)

    def _on_finished(self, final: Any) -> None:
        self._set_busy(False)
        self.finished.emit(final)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busyChanged.emit(busy)


class SegmentWorker(QObject):
    """Lives on its own thread: holds the segmenter, embeds each image once, answers clicks."""

    masked = Signal(object)
    unavailable = Signal(str)
    needsCheckpoint = Signal(str)  # why there is no checkpoint to load (the window offers one)

    def __init__(self) -> None:
        super().__init__()
        self._segmenter: Any = None
        self._factory: Callable[[], Any] | None = None

    @Slot(object)
    def configure(self, factory: Callable[[], Any]) -> None:
        self._segmenter, self._factory = None, factory

    @Slot(object, object, object, object)
    def predict(self, image: Any, points: list, labels: list, box: Any) -> None:
        from pipeline.segment import CheckpointMissing, SegmentUnavailable

        try:
            if self._segmenter is None:
                assert self._factory is not None
                self._segmenter = self._factory()
            self._segmenter.set_image(image)
            self.masked.emit(self._segmenter.predict(points, labels, box))
        except CheckpointMissing as error:
            self.needsCheckpoint.emit(error.reason)
        except SegmentUnavailable as error:
            self.unavailable.emit(str(error))
        except Exception as error:  # noqa: BLE001 - out of GPU memory, or a bug: said, and painting goes on
            log.exception("segmenting failed")
            self.unavailable.emit(f"Segmenting failed ({type(error).__name__}: {error}); painting still works.")


class SegmentClient(QObject):
    """Click-to-segment in the background, so a slow first embedding never freezes the canvas."""

    masked = Signal(object)
    unavailable = Signal(str)
    needsCheckpoint = Signal(str)
    _configure = Signal(object)
    _predict = Signal(object, object, object, object)

    def __init__(self, factory: Callable[[], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("retake-segment")
        self._worker = SegmentWorker()
        self._worker.moveToThread(self._thread)
        self._configure.connect(self._worker.configure)
        self._predict.connect(self._worker.predict)
        self._worker.masked.connect(self.masked)
        self._worker.unavailable.connect(self.unavailable)
        self._worker.needsCheckpoint.connect(self.needsCheckpoint)
        self._thread.start()
        self._stop = stop_with(self, self._thread, wait_ms=5000)
        self.set_factory(factory)

    def set_factory(self, factory: Callable[[], Any]) -> None:
        """Use another segmenter (the SAM checkpoint changed in Settings)."""
        self._configure.emit(factory)

    def predict(self, image: Any, points: list, labels: list, box: Any) -> None:
        self._predict.emit(image, list(points), list(labels), box)

    def shutdown(self) -> None:
        self._stop()
