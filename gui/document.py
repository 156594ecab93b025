"""The document the widgets show: what the artist is editing in one photo's project, and nothing else.

It holds the photo, the masks by purpose, the reference images, the prompts, the method and its
parameters: exactly what Undo undoes and Save writes. Every change an artist makes goes through the
undo stack (gui.commands), whose clean state is the "unsaved changes" flag; a parameter or method is
checked as the command line checks --param before it changes anything (pipeline.params.check_params),
so the document never holds a value a save could not write. What happens around it (a run and its
previews, the project's history of results, reading and writing the folder, the model) belongs to
the edit session (gui.session). Pipeline modules are imported lazily so the window opens before
torch is loaded.
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


@dataclass
class Reference:
    """A reference image a method takes as a named input, with the prompt that describes it."""

    image: Image.Image | None = None
    prompt: str = ""


@dataclass(frozen=True)
class DocumentState:
    """The document as a save writes it and a run sends it: copies, safe to hand to another thread."""

    source_prompt: str = ""
    target_prompt: str = ""
    method_id: str = "p2p"
    params: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    references: dict[str, Reference] = field(default_factory=dict)


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


def method_title(method_id: str) -> str:
    """A method as the Method panel names it (Prompt-to-Prompt), or its id when this Retake has no such method."""
    from pipeline.errors import ParamError
    from pipeline.methods.registry import get_method

    try:
        return get_method(method_id).title
    except ParamError:  # a project of another version: its id is all there is to show
        return method_id


def check_method_params(method_id: str, values: dict[str, Any]) -> Any:
    """`values` of `method_id` checked as the command line checks them (pipeline.params.CheckedParams);
    an unknown method raises ParamError."""
    from pipeline.methods.registry import get_method
    from pipeline.params import check_params

    return check_params(get_method(method_id).Params, values)


class Document(QObject):
    """Observable state of the open project; every artist-facing change is undoable."""

    projectChanged = Signal()
    imageChanged = Signal()
    maskChanged = Signal(str)
    referenceChanged = Signal(str)
    promptsChanged = Signal()
    methodChanged = Signal()
    paramsChanged = Signal(str)
    refused = Signal(str)  # a value the document did not take, and why (one sentence)

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
        self.mask_pictures: dict[str, str] = {}
        """Masks painted on a reference picture: mask input name -> image input name (others: the photo)."""

    # -- whole-document changes (not undoable: opening a project) ---------------------------------
    def load(self, project_path: Path, image: Image.Image, state: DocumentState) -> None:
        """Show another project (its state already checked); the undo history starts over, saved."""
        self.undo.clear()
        self.project_path, self.image = project_path, image
        self.masks = {name: pixels if pixels.dtype == np.uint8 and pixels.flags.writeable else pixels.astype(np.uint8)
                      for name, pixels in state.masks.items()}  # as read (the canvas has them prepared)
        self.references = {name: Reference(ref.image.convert("RGB") if ref.image is not None else None, ref.prompt)
                           for name, ref in state.references.items()}
        self.projectChanged.emit()
        self.imageChanged.emit()
        self.write_method(state.method_id, state.params)
        self.write_prompt("source", state.source_prompt)
        self.write_prompt("target", state.target_prompt)
        for name in self.references:  # the masks came with imageChanged (and these, with their pictures)
            self.referenceChanged.emit(name)
        self.mark_saved()

    def snapshot(self) -> DocumentState:
        """The document as it stands, copied (masks and reference records) for a save or a run."""
        return DocumentState(self.source_prompt, self.target_prompt, self.method_id, dict(self.params),
                             {name: pixels.copy() for name, pixels in self.masks.items()},
                             {name: Reference(ref.image, ref.prompt) for name, ref in self.references.items()})

    def matches(self, state: DocumentState) -> bool:
        """Whether the document is still what `state` (a snapshot of it) holds."""
        return ((self.source_prompt, self.target_prompt, self.method_id, self.params)
                == (state.source_prompt, state.target_prompt, state.method_id, state.params)
                and self.masks.keys() == state.masks.keys()
                and all(np.array_equal(pixels, state.masks[name]) for name, pixels in self.masks.items())
                and {name: (ref.image, ref.prompt) for name, ref in self.references.items()}
                == {name: (ref.image, ref.prompt) for name, ref in state.references.items()})

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
        self.undo.push(MaskEdit(self.write_mask_box, name, box, before, after, text, applied))

    def replace_mask(self, name: str, new: np.ndarray, text: str) -> None:
        """Replace a whole mask as one undoable step (fill, clear, invert, segment)."""
        old = self.mask(name).copy()
        box = (0, 0, old.shape[1], old.shape[0])
        self.undo.push(MaskEdit(self.write_mask_box, name, box, old, new.astype(np.uint8), text))

    def write_mask_box(self, name: str, box: Box, pixels: np.ndarray) -> None:
        x0, y0, x1, y1 = box
        self.mask(name)[y0:y1, x0:x1] = pixels
        self.maskChanged.emit(name)

    def load_mask(self, name: str, pixels: np.ndarray) -> None:
        """Set a mask as opened from the project (not an edit)."""
        self.masks[name] = pixels.astype(np.uint8)
        self.maskChanged.emit(name)

    # -- references -----------------------------------------------------------------------------
    def set_reference_image(self, name: str, image: Image.Image) -> None:
        """A new reference picture as one undoable step (masks painted on the old one are dropped)."""
        reference = self.references.get(name)
        before = (reference.image if reference is not None else None, self.masks_on(name))
        self.undo.push(SetReferenceImage(self.write_reference_image, name, before, (image.convert("RGB"), {})))

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

    def set_param(self, name: str, value: Any) -> bool:
        """Change one parameter as one undoable step, if the method takes that value; otherwise say why
        (`refused`) and change nothing."""
        checked = check_method_params(self.method_id, {name: value})
        if not checked.ok:
            self.refused.emit(str(checked.first_error()))
            return False
        from pipeline.params import param_label

        value = checked.json_values()[name]
        if self.params.get(name) != value:
            self.undo.push(SetValue(self.write_param, name, self.params.get(name), value,
                                    f"Change {param_label(name)}"))
        return True

    def write_param(self, name: str, value: Any) -> None:
        self.params[name] = value
        self.paramsChanged.emit(name)

    def set_method(self, method_id: str, params: dict[str, Any] | None = None, text: str = "Change method") -> bool:
        """Switch method (its defaults unless `params` are given) as one undoable step, if it is known and
        takes those values; otherwise say why (`refused`) and change nothing."""
        values = self._method_values(method_id, params or {})
        if values is None:
            return False
        if (method_id, values) != (self.method_id, self.params):
            self.undo.push(SetMethod(self.write_method, text, (self.method_id, dict(self.params)), (method_id, values)))
        return True

    def _method_values(self, method_id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The method's defaults with `params` over them, if the method is known and takes them; else None,
        having said why (`refused`)."""
        from pipeline.errors import ParamError

        try:
            checked = check_method_params(method_id, params)
        except ParamError as error:  # an unknown method
            self.refused.emit(str(error))
            return None
        if not checked.ok:
            self.refused.emit(str(checked.first_error()))
            return None
        return {**method_defaults(method_id), **checked.json_values()}

    def write_method(self, method_id: str, params: dict[str, Any]) -> None:
        changed = method_id != self.method_id
        self.method_id, self.params = method_id, dict(params)
        if changed:
            self.mask_pictures = reference_masks(method_id)
            self.methodChanged.emit()
        self.paramsChanged.emit("")

    def restore_settings(self, source: str | None, target: str | None, method_id: str | None,
                         params: dict[str, Any], text: str = "Restore settings") -> bool:
        """Prompts, method and parameters of an earlier edit (each None: kept; `params` over the method's
        defaults), checked before, as one undoable step; returns whether anything changed (nothing
        changes: no step). Should a step fail after all, the ones made are undone and the error raised:
        the stack is never left inside an open macro."""
        values = None if method_id is None else self._method_values(method_id, params)
        prompts = [(which, new) for which, new, old in (("source", source, self.source_prompt),
                                                        ("target", target, self.target_prompt))
                   if new is not None and new != old]
        method = values is not None and (method_id, values) != (self.method_id, self.params)
        if not prompts and not method:
            return False
        self.undo.beginMacro(text)
        try:
            for which, new in prompts:
                self.set_prompt(which, new)
            if method:
                self.undo.push(SetMethod(self.write_method, text, (self.method_id, dict(self.params)),
                                         (method_id, values)))  # type: ignore[arg-type]
        except BaseException:
            self.undo.endMacro()
            self.undo.undo()
            raise
        self.undo.endMacro()
        return True
