"""The reference panel: a second picture some methods take (load, drop or paste), its prompt, and the
object mask painted on it.

It is built from the method's declared inputs of kind "image", so it is enabled exactly for methods
whose Params declare a reference and greyed out for the others. The reference's object mask (the
method's mask input whose `picture` is the reference, see gui.document.reference_masks) is painted on
the main canvas:
"Paint its mask" switches the canvas to the reference picture, and the thumbnail here shows the
mask over the picture. Picture and prompt changes are undoable and are saved in the project.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget,
)

from gui.document import Document
from gui.qimage import from_qimage, mask_overlay, to_pixmap
from gui.theme import MASK_COLOUR

PREVIEW_SIDE = 220
NO_PICTURE = "Drop, paste or load a reference image"


class ReferencePanel(QWidget):
    problem = Signal(str)  # a file that could not be read, for the window's message bar
    paintMaskRequested = Signal(str)  # the mask input to paint on the reference

    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.input_name: str | None = None
        self.mask_name: str | None = None
        self.title = QLabel("No reference: the current method takes none.")
        self.title.setWordWrap(True)
        self.picture = QLabel(NO_PICTURE)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumHeight(120)
        self.picture.setStyleSheet("border: 1px dashed #666;")
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Describe the reference (may stay empty)")
        load, paste = QPushButton("Load…"), QPushButton("Paste")
        load.setToolTip("Load a reference image (Ctrl+Shift+R)")
        paste.setToolTip("Paste a reference image from the clipboard (Ctrl+Shift+V)")
        self.paint_mask = QPushButton("Paint its mask")
        self.paint_mask.setToolTip("Paint (or segment) the object in the reference: the canvas shows the reference "
                                   "while its mask is chosen in Tools (N switches masks).")
        self.mask_note = QLabel()
        self.mask_note.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(load)
        buttons.addWidget(paste)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.picture)
        layout.addLayout(buttons)
        layout.addWidget(self.prompt)
        layout.addWidget(self.paint_mask)
        layout.addWidget(self.mask_note)
        layout.addStretch(1)
        self.setAcceptDrops(True)
        self.setEnabled(False)
        load.clicked.connect(self.choose_file)
        paste.clicked.connect(self.paste)
        self.paint_mask.clicked.connect(lambda: self.mask_name and self.paintMaskRequested.emit(self.mask_name))
        self.prompt.editingFinished.connect(self._prompt_edited)
        doc.methodChanged.connect(self.set_ready)
        doc.referenceChanged.connect(self._show)
        doc.maskChanged.connect(lambda name: name == self.mask_name and self._show(self.input_name or ""))

    def set_ready(self) -> None:
        from pipeline.methods.base import input_specs
        from pipeline.methods.registry import get_method

        specs = input_specs(get_method(self.doc.method_id).Params)
        spec = next((s for s in specs if s.kind == "image"), None)
        self.input_name = spec.name if spec else None
        self.mask_name = next((m for m, owner in self.doc.mask_pictures.items() if owner == self.input_name), None)
        self.setEnabled(spec is not None)
        self.title.setText(f"{spec.label}: {spec.help}" if spec else "No reference: the current method takes none.")
        self.paint_mask.setVisible(self.mask_name is not None)
        self.mask_note.setVisible(self.mask_name is not None)
        self._show(self.input_name or "")

    def _show(self, name: str) -> None:
        if name != (self.input_name or ""):
            return
        reference = self.doc.references.get(name) if name else None
        if reference is not None and reference.image is not None:
            self.picture.setPixmap(self._thumbnail(reference.image))
        else:
            self.picture.clear()
            self.picture.setText(NO_PICTURE)
        if self.prompt.text() != (reference.prompt if reference is not None else ""):
            self.prompt.setText(reference.prompt if reference is not None else "")
        if self.mask_name is not None:
            painted = self.doc.has_mask(self.mask_name)
            self.mask_note.setText("Object mask: painted." if painted else
                                   "Object mask: not painted yet; paint or segment the object in the reference.")

    def _thumbnail(self, image) -> QPixmap:
        shown = image.copy()
        shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        pixmap = to_pixmap(shown)
        mask = self.doc.masks.get(self.mask_name) if self.mask_name else None
        if mask is not None and mask.any():
            painter = QPainter(pixmap)
            painter.drawImage(pixmap.rect(), mask_overlay(mask, MASK_COLOUR))
            painter.end()
        return pixmap

    def load_file(self, path: Path) -> bool:
        from pipeline.errors import RetakeError
        from pipeline.images import load_image

        if not self.input_name:
            return False
        try:
            self.doc.set_reference_image(self.input_name, load_image(path))
        except (RetakeError, OSError) as error:
            self.problem.emit(str(error))
            return False
        return True

    def choose_file(self) -> None:
        if not self.input_name:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Reference image", "",
                                              "Images (*.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp)")
        if path:
            self.load_file(Path(path))

    def paste(self) -> None:
        image = QApplication.clipboard().image()
        if self.input_name and not image.isNull():
            self.doc.set_reference_image(self.input_name, from_qimage(image))

    def _prompt_edited(self) -> None:
        if self.input_name:
            self.doc.set_reference_prompt(self.input_name, self.prompt.text())

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.isEnabled() and (event.mimeData().hasUrls() or event.mimeData().hasImage()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """A file dropped from the desktop, or a picture dragged out of another application."""
        mime = event.mimeData()
        files = [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]
        if files:
            self.load_file(files[0])
        elif mime.hasImage() and self.input_name:
            self.doc.set_reference_image(self.input_name, from_qimage(mime.imageData()))
        event.acceptProposedAction()
