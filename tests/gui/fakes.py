"""Stand-ins for the engine and for Segment Anything, for driving the window like a user.

FakeEngine follows krita-ai-diffusion's MockClient: it implements pipeline.engine.EditEngine (checked
by tests/test_engine_protocol.py), speaks the real event protocol (Progress and Preview with typed
stages, Preview with its latent, Done, Failed, CancelledEvent), honours the CancelToken between steps, and
writes real inversions and results into the real project, so reopening and re-editing behave as with
the engine. Its draft writes nothing, needs the stored inversion of the request's key (else NeedsRun, as
the engine) and is a flat picture whose colour is `draft_colour(target prompt)`, so a test can tell
which draft is on the canvas; as the engine, a run of the last draft's request (its inputs' bytes and
all, previews aside) commits that picture without steps (Done.from_draft), and a target prompt of more
than WINDOW_WORDS words gets the engine's Notice. Its full decode of a step is a flat picture whose red
level is the step's latent value times 5, so a test can tell which step was decoded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from pipeline.errors import Cancelled, ModelError
from pipeline.events import CancelledEvent, CancelToken, Done, Drafted, Failed, Notice, Preview, Progress, Stage
from pipeline.project import ModelRecord, Project

INVERSION, EDITING = Stage.DDIM_INVERSION, Stage.EDITING
WINDOW_WORDS = 20  # FakeEngine's text window: a target prompt of more words gets the engine's Notice


def say_overflow(request, emit) -> None:
    """The Notice the engine gives a target prompt longer than its text encoder's window."""
    words = request.target_prompt.split()
    if len(words) > WINDOW_WORDS:
        emit(Notice(f"The target prompt is longer than the text encoder's {WINDOW_WORDS}-word window; these "
                    f"words are ignored: {' '.join(words[WINDOW_WORDS:])}."))


def draft_colour(target_prompt: str) -> tuple[int, int, int]:
    """The flat colour of FakeEngine's draft for a target prompt."""
    digest = hashlib.sha256(target_prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def inversion_key(request) -> str:
    """FakeEngine's inversion key: the source prompt, the method and its inversion parameters."""
    params = {k: v for k, v in request.params.items() if k in ("steps", "inversion", "guidance")}
    return hashlib.sha256(json.dumps([request.source_prompt, request.method, params],
                                     sort_keys=True).encode()).hexdigest()[:32]


def request_identity(request) -> str:
    """What FakeEngine's result is made from: the request, previews aside, and its input files' bytes."""
    fields = {**json.loads(request.to_json()), "preview_every": None, "preview_side": None}
    files = {name: Path(path).read_bytes().hex() if path else "" for name, path in request.input_files().items()}
    return hashlib.sha256(json.dumps([fields, files], sort_keys=True).encode()).hexdigest()


class FakeEngine:
    """Scripted runs: `steps` inversion and edit steps `delay` seconds apart; `fail` makes a run fail."""

    def __init__(self, steps: int = 6, delay: float = 0.0, fail: str | None = None) -> None:
        self.steps, self.delay, self.fail = steps, delay, fail
        self.requests: list = []
        self.inversions_made = 0
        self.started = threading.Event()
        self.preloads: list = []  # (model, device, dtype, allow_download) of every Engine.preload
        self.decodes: list = []  # the latent values decoded in full
        self.decode_delay = 0.0
        self.missing_models: set[str] = set()
        self.drafts: list = []  # the request of every draft asked for
        self.drafts_finished: list = []  # the final event of every draft
        self.cancel_ignored = False  # a draft runs to its end though cancelled (one cancelled too late)
        self.preload_gate: threading.Event | None = None  # set: a preload waits for it (a slow load)
        self.forgotten = 0  # how many times the window said it closed its project (Engine.forget)
        self._drafted: tuple[str, Image.Image] | None = None  # the last draft: its request's identity, picture

    def preload(self, model_spec, device=None, dtype=None, *, allow_download=False, allow_pickle=False, emit=None):
        self.preloads.append((model_spec, device, dtype, allow_download))
        if self.preload_gate is not None:
            self.preload_gate.wait(30)
        if model_spec in self.missing_models:
            raise ModelError(f"There is no model at '{model_spec}': no such file or folder.")
        return SimpleNamespace(device="cpu")

    def decode(self, bundle, latent):
        time.sleep(self.decode_delay)
        value = float(latent.flatten()[0])
        self.decodes.append(value)
        return Image.new("RGB", (128, 96), (int(value * 5), 0, 0))

    def run(self, request, emit, cancel=None):
        cancel = cancel or CancelToken()
        self.requests.append(request)
        self.started.set()
        stage = Stage.RESOLVING
        try:
            project = Project.open(request.project)
            image = project.image()
            inv_params = {k: v for k, v in request.params.items() if k in ("steps", "inversion", "guidance")}
            key = inversion_key(request)
            reused = project.find_inversion(key) is not None
            emit(Progress(Stage.LOADING_MODEL, 0, 1, None))
            emit(Progress(Stage.LOADING_MODEL, 1, 1, 0.0))
            say_overflow(request, emit)
            if not reused:
                stage = INVERSION
                self._steps(INVERSION, emit, cancel, Image.new("RGB", image.size, "grey"), climbing=True)
                project.save_inversion(key, {"latents": torch.zeros(2, 4, 8, 8)}, method=request.method,
                                       model_identity="sha256:fake", source_prompt=request.source_prompt,
                                       params=inv_params, size=(64, 64), steps=self.steps)
                self.inversions_made += 1
            stage = EDITING
            drafted, self._drafted = self._drafted, None
            from_draft = drafted is not None and drafted[0] == request_identity(request)
            result = drafted[1] if from_draft else self._steps(EDITING, emit, cancel, image, latent_base=10)
            if self.fail:
                final = Failed(self.fail)
            else:
                edit = project.add_edit(target_prompt=request.target_prompt, source_prompt=request.source_prompt,
                                        model=ModelRecord("fake", "sha256:fake"), method=request.method,
                                        params=request.params, seed=request.seed, inversion_key=key, result=result)
                final = Done(project.result_path(edit), None, Path(request.project), edit.id, reused, result,
                             from_draft)
        except Cancelled:
            final = CancelledEvent(stage)
        emit(final)
        return final

    def draft(self, request, emit, cancel=None):
        cancel = cancel or CancelToken()
        self.drafts.append(request)
        stage = Stage.RESOLVING
        try:
            project = Project.open(request.project)  # without recovery: writes nothing
            say_overflow(request, emit)
            key = inversion_key(request)
            if project.find_inversion(key) is None:
                final = Failed("These settings need a new inversion of the photo; press Run.", "NeedsRun")
            else:
                stage = EDITING
                self._steps(EDITING, emit, CancelToken() if self.cancel_ignored else cancel, project.image(),
                            latent_base=10)
                final = Drafted(Image.new("RGB", project.image().size, draft_colour(request.target_prompt)), key)
                self._drafted = (request_identity(request), final.image)
        except Cancelled:
            final = CancelledEvent(stage)
        self.drafts_finished.append(final)
        emit(final)
        return final

    def forget(self):
        self.forgotten += 1
        self._drafted = None

    def _steps(self, stage, emit, cancel, image, latent_base=0, climbing=False):
        """A preview per step; step i's latent is filled with latent_base + i; timesteps rise from 1
        when `climbing` (an inversion), else fall towards 1."""
        timesteps = [1 + 1000 * i // self.steps for i in range(self.steps)]
        if not climbing:
            timesteps.reverse()
        emit(Progress(stage, 0, self.steps, None))
        picture = None
        for i in range(self.steps):
            cancel.check()
            time.sleep(self.delay)
            tint = np.asarray(image, np.float32) * (1 - (i + 1) / (2 * self.steps))
            picture = Image.fromarray(tint.astype(np.uint8))
            small = picture.copy()
            small.thumbnail((64, 64))
            latent = torch.full((1, 4, 8, 8), float(latent_base + i + 1))
            emit(Preview(stage, i + 1, self.steps, small, latent, timesteps[i]))
            emit(Progress(stage, i + 1, self.steps, self.delay * (self.steps - i - 1)))
        return picture


class StubSegmenter:
    """A segmenter whose mask is the box, or a disc around the positive clicks minus the negative ones."""

    def __init__(self) -> None:
        self.images_set = 0
        self.calls: list = []
        self._size = (0, 0)
        self._key = None

    def set_image(self, image):
        key = hashlib.sha256(image.tobytes()).hexdigest()
        if key != self._key:
            self._key, self._size = key, image.size
            self.images_set += 1

    def predict(self, points, labels, box=None):
        self.calls.append((list(points), list(labels), box))
        width, height = self._size
        ys, xs = np.mgrid[0:height, 0:width]
        mask = np.zeros((height, width), bool)
        if box is not None:
            x0, y0, x1, y1 = box
            mask |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        for (x, y), label in zip(points, labels):
            disc = np.hypot(xs - x, ys - y) < 30
            mask = mask | disc if label else mask & ~disc
        return mask
