"""Undo commands over the document: every mask stroke, prompt and parameter change is one of these.

Each command holds the before and after values and calls the document's raw setters, which emit
the change signals; widgets never touch the undo stack's contents. Typing in a prompt and dragging
a slider merge into one command per field, as in image editors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtGui import QUndoCommand

from gui.masks import Box

if TYPE_CHECKING:
    from gui.document import Document

VALUE_ID = 1


class MaskEdit(QUndoCommand):
    """A change to one mask inside a box; `applied` when the stroke was already painted live."""

    def __init__(self, doc: Document, name: str, box: Box, before: np.ndarray, after: np.ndarray, text: str,
                 applied: bool = False) -> None:
        super().__init__(text)
        self.doc, self.name, self.box, self.before, self.after = doc, name, box, before, after
        self._skip = applied

    def redo(self) -> None:
        if self._skip:
            self._skip = False
            return
        self.doc.write_mask_box(self.name, self.box, self.after)

    def undo(self) -> None:
        self.doc.write_mask_box(self.name, self.box, self.before)


class SetValue(QUndoCommand):
    """One named value (a prompt, a parameter) changed; consecutive changes of the same one merge."""

    def __init__(self, write: Callable[[str, Any], None], name: str, before: Any, after: Any, text: str) -> None:
        super().__init__(text)
        self.write, self.name, self.before, self.after = write, name, before, after

    def id(self) -> int:
        return VALUE_ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetValue) or (other.write, other.name) != (self.write, self.name):
            return False
        self.after = other.after
        return True

    def redo(self) -> None:
        self.write(self.name, self.after)

    def undo(self) -> None:
        self.write(self.name, self.before)


class SetMethod(QUndoCommand):
    """Switch method (or replace all parameters: presets, reset, restore) with the parameters it brings."""

    def __init__(self, doc: Document, text: str, method: str, params: dict[str, Any]) -> None:
        super().__init__(text)
        self.doc = doc
        self.before = (doc.method_id, dict(doc.params))
        self.after = (method, dict(params))

    def redo(self) -> None:
        self.doc.write_method(*self.after)

    def undo(self) -> None:
        self.doc.write_method(*self.before)


class SetReferenceImage(QUndoCommand):
    """A new reference picture; the masks painted on the old one go with it (and come back on undo)."""

    def __init__(self, doc: Document, name: str, image: Any) -> None:
        super().__init__("Load reference")
        self.doc, self.name = doc, name
        reference = doc.references.get(name)
        self.before = (reference.image if reference is not None else None, doc.masks_on(name))
        self.after = (image, {})

    def redo(self) -> None:
        self.doc.write_reference_image(self.name, *self.after)

    def undo(self) -> None:
        self.doc.write_reference_image(self.name, *self.before)
