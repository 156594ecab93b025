"""Undo commands over the document: every mask stroke, prompt and parameter change is one of these.

Each command holds the before and after values and a bound write callable of the document (its raw
setter, which emits the change signal), so commands know nothing of the document's class and widgets
never touch the undo stack's contents. Typing in a prompt and dragging a slider merge into one
command per field, as in image editors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtGui import QUndoCommand

from gui.masks import Box

VALUE_ID = 1
WriteMaskBox = Callable[[str, Box, np.ndarray], None]
WriteMethod = Callable[[str, dict[str, Any]], None]
WriteReference = Callable[[str, Image.Image | None, dict[str, np.ndarray]], None]


class MaskEdit(QUndoCommand):
    """A change to one mask inside a box; `applied` when the stroke was already painted live."""

    def __init__(self, write: WriteMaskBox, name: str, box: Box, before: np.ndarray, after: np.ndarray, text: str,
                 applied: bool = False) -> None:
        super().__init__(text)
        self.write, self.name, self.box, self.before, self.after = write, name, box, before, after
        self._skip = applied

    def redo(self) -> None:
        if self._skip:
            self._skip = False
            return
        self.write(self.name, self.box, self.after)

    def undo(self) -> None:
        self.write(self.name, self.box, self.before)


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
    """Switch method (or replace all parameters: presets, reset, restore): (method, parameters) before
    and after."""

    def __init__(self, write: WriteMethod, text: str, before: tuple[str, dict[str, Any]],
                 after: tuple[str, dict[str, Any]]) -> None:
        super().__init__(text)
        self.write, self.before, self.after = write, before, after

    def redo(self) -> None:
        self.write(*self.after)

    def undo(self) -> None:
        self.write(*self.before)


class SetReferenceImage(QUndoCommand):
    """A new reference picture; the masks painted on the old one go with it (and come back on undo):
    (picture, its masks) before and after."""

    def __init__(self, write: WriteReference, name: str, before: tuple[Image.Image | None, dict[str, np.ndarray]],
                 after: tuple[Image.Image | None, dict[str, np.ndarray]]) -> None:
        super().__init__("Load reference")
        self.write, self.name, self.before, self.after = write, name, before, after

    def redo(self) -> None:
        self.write(self.name, *self.after)

    def undo(self) -> None:
        self.write(self.name, *self.before)
