"""The document the widgets show: one photo's project as the artist is editing it.

It holds the image, the masks by purpose, the reference images, the prompts, the method and its
parameters, the inversion state and the results history, emits a signal when any of them changes,
and knows nothing of widgets. Changes an artist makes go through the undo stack (gui.commands),
whose clean state is the "unsaved changes" flag. Reading and writing the project folder lives in
gui.project_io; pipeline modules are imported lazily so the window opens before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from gui.commands import MaskEdit, SetMethod, SetReferenceImage, SetValue
from gui.masks import Box, empty_mask


@dataclass(frozen=True)
class ResultEntry:
    """One edit of the history, as the project recorded it."""

    edit_id: str
    source_prompt: str
    target_prompt: str
    method: str
    params: dict[str, Any]
    path: Path
    created: str = ""


@dataclass
class Reference:
    """A reference image a method takes as a named input, with the prompt that describes it."""

    image: Image.Image | None = None
    prompt: str = ""


def reference_masks(method_id: str) -> dict[str, str]:
    """The method's masks painted on one of its reference pictures: mask name -> image input name, as
    each mask's InputSpec.picture declares; every other mask is painted on the photo."""
    from pipeline.methods.base import input_specs
    from pipeline.methods.registry import get_method

    return {s.name: s.picture for s in input_specs(get_method(method_id).Params) if s.picture is not None}


def method_defaults(method_id: str) -> dict[str, Any]:
    """The JSON-ready default of every parameter of a method."""
    from pipeline.methods.registry import get_method
    from pipeline.params import param_specs, to_json_value

    return {s.name: to_json_value(s.kind, s.default) for s in param_specs(get_method(method_id).Params)}


@dataclass
class RunState:
    """What the worker is doing, as the status bar and timeline need it.

    Every step of the run that sent a preview keeps its cheap picture, its latent (`latents`, for a
    full VAE decode when the artist scrubs to it) and its timestep; full decodes are kept in `decoded`. `serial` tells
    one run's steps from the next's; `model` is the model options the run used (a decode needs them).
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


class Document(QObject):
    """Observable state of the open project; every artist-facing change is undoable."""

    projectChanged = Signal()
    imageChanged = Signal()
    maskChanged = Signal(str)
    referenceChanged = Signal(str)
    promptsChanged = Signal()
    methodChanged = Signal()
    paramsChanged = Signal(str)
    resultsChanged = Signal()
    currentResultChanged = Signal()
    inversionChanged = Signal()
    runChanged = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.undo = QUndoStack(self)
        self.project_path: Path | None = None
        self.image: Image.Image | None = None
        self.masks: dict[str, np.ndarray] = {}
        self.references: dict[str, Reference] = {}
        self.source_prompt = ""
        self.target_prompt = ""
        self.method_id = "p2p"
        self.params: dict[str, Any] = {}
        self.results: list[ResultEntry] = []
        self.current_result = -1
        self.inversions = 0
        self.run = RunState()
        self.mask_pictures: dict[str, str] = {}
        """Masks painted on a reference picture: mask input name -> image input name (others: the photo)."""

    # -- whole-document changes (not undoable: opening a project) ---------------------------------
    def reset(self, project_path: Path | None, image: Image.Image | None) -> None:
        """Start over on another project; the undo history is cleared."""
        self.undo.clear()
        self.project_path, self.image = project_path, image
        self.masks, self.references = {}, {}
        self.results, self.current_result, self.inversions = [], -1, 0
        self.run = RunState()
        self.projectChanged.emit()
        self.imageChanged.emit()

    @property
    def dirty(self) -> bool:
        return not self.undo.isClean()

    def mark_saved(self) -> None:
        self.undo.setClean()

    # -- masks ----------------------------------------------------------------------------------
    def picture_for(self, mask_name: str) -> Image.Image | None:
        """The picture mask `mask_name` is painted on: the photo, or the reference it belongs to."""
        owner = self.mask_pictures.get(mask_name)
        if owner is None:
            return self.image
        reference = self.references.get(owner)
        return reference.image if reference is not None else None

    def masks_on(self, reference: str) -> dict[str, np.ndarray]:
        """Copies of the masks painted on one reference picture."""
        return {name: self.masks[name].copy() for name, owner in self.mask_pictures.items()
                if owner == reference and name in self.masks}

    def mask(self, name: str) -> np.ndarray:
        """The mask `name` (made empty at its picture's size on first use)."""
        if name not in self.masks:
            picture = self.picture_for(name)
            assert picture is not None, "a mask needs a picture"
            self.masks[name] = empty_mask(*picture.size)
        return self.masks[name]

    def has_mask(self, name: str) -> bool:
        return name in self.masks and bool(self.masks[name].any())

    def push_mask_change(self, name: str, box: Box, before: np.ndarray, text: str, applied: bool = True) -> None:
        """Record a change already made to mask `name` inside `box` (before: that box's old pixels)."""
        x0, y0, x1, y1 = box
        after = self.mask(name)[y0:y1, x0:x1].copy()
        self.undo.push(MaskEdit(self, name, box, before, after, text, applied))

    def replace_mask(self, name: str, new: np.ndarray, text: str) -> None:
        """Replace a whole mask as one undoable step (fill, clear, invert, segment)."""
        old = self.mask(name).copy()
        box = (0, 0, old.shape[1], old.shape[0])
        self.undo.push(MaskEdit(self, name, box, old, new.astype(np.uint8), text))

    def write_mask_box(self, name: str, box: Box, pixels: np.ndarray) -> None:
        x0, y0, x1, y1 = box
        self.mask(name)[y0:y1, x0:x1] = pixels
        self.maskChanged.emit(name)

    def load_mask(self, name: str, pixels: np.ndarray) -> None:
        """Set a mask as opened from the project (not an edit)."""
        self.masks[name] = pixels.astype(np.uint8)
        self.maskChanged.emit(name)

    # -- references -----------------------------------------------------------------------------
    def load_reference(self, name: str, image: Image.Image | None, prompt: str = "") -> None:
        """Set a reference as opened from the project (not an edit)."""
        self.references[name] = Reference(image.convert("RGB") if image is not None else None, prompt)
        self.referenceChanged.emit(name)

    def set_reference_image(self, name: str, image: Image.Image) -> None:
        """A new reference picture as one undoable step (masks painted on the old one are dropped)."""
        self.undo.push(SetReferenceImage(self, name, image.convert("RGB")))

    def write_reference_image(self, name: str, image: Image.Image | None, masks: dict[str, np.ndarray]) -> None:
        self.references.setdefault(name, Reference()).image = image
        for mask_name, owner in self.mask_pictures.items():
            if owner == name:
                self.masks.pop(mask_name, None)
        self.masks.update({mask_name: pixels.copy() for mask_name, pixels in masks.items()})
        self.referenceChanged.emit(name)
        for mask_name, owner in self.mask_pictures.items():
            if owner == name:
                self.maskChanged.emit(mask_name)

    def set_reference_prompt(self, name: str, text: str) -> None:
        before = self.references[name].prompt if name in self.references else ""
        if text != before:
            self.undo.push(SetValue(self.write_reference_prompt, name, before, text, "Edit reference prompt"))

    def write_reference_prompt(self, name: str, text: str) -> None:
        self.references.setdefault(name, Reference()).prompt = text
        self.referenceChanged.emit(name)

    # -- prompts, method, parameters ------------------------------------------------------------
    def set_prompt(self, which: str, text: str) -> None:
        """`which` is "source" or "target"."""
        before = self.source_prompt if which == "source" else self.target_prompt
        if text != before:
            self.undo.push(SetValue(self.write_prompt, which, before, text, f"Edit {which} prompt"))

    def write_prompt(self, which: str, text: str) -> None:
        if which == "source":
            self.source_prompt = text
        else:
            self.target_prompt = text
        self.promptsChanged.emit()

    def set_param(self, name: str, value: Any) -> None:
        if self.params.get(name) != value:
            self.undo.push(SetValue(self.write_param, name, self.params.get(name), value, f"Change {name}"))

    def write_param(self, name: str, value: Any) -> None:
        self.params[name] = value
        self.paramsChanged.emit(name)

    def set_method(self, method_id: str, params: dict[str, Any] | None = None, text: str = "Change method") -> None:
        """Switch method (its defaults unless `params` are given) as one undoable step."""
        values = {**method_defaults(method_id), **(params or {})}
        if (method_id, values) != (self.method_id, self.params):
            self.undo.push(SetMethod(self, text, method_id, values))

    def write_method(self, method_id: str, params: dict[str, Any]) -> None:
        changed = method_id != self.method_id
        self.method_id, self.params = method_id, dict(params)
        if changed:
            self.mask_pictures = reference_masks(method_id)
            self.methodChanged.emit()
        self.paramsChanged.emit("")

    def restore_settings(self, source: str, target: str, method_id: str, params: dict[str, Any],
                         text: str = "Restore settings") -> None:
        """Prompts, method and parameters of an earlier edit, as one undoable step."""
        self.undo.beginMacro(text)
        self.set_prompt("source", source)
        self.set_prompt("target", target)
        self.set_method(method_id, params, text)
        self.undo.endMacro()

    # -- results and run state ------------------------------------------------------------------
    def set_results(self, results: list[ResultEntry], inversions: int, current: int | None = None) -> None:
        self.results, self.inversions = results, inversions
        self.resultsChanged.emit()
        self.inversionChanged.emit()
        self.set_current_result(len(results) - 1 if current is None else current)

    def set_current_result(self, index: int) -> None:
        self.current_result = index if -1 <= index < len(self.results) else -1
        self.currentResultChanged.emit()

    def result(self) -> ResultEntry | None:
        return self.results[self.current_result] if self.current_result >= 0 else None

    def update_run(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.run, name, value)
        self.runChanged.emit()
