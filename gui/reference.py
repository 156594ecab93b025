"""The reference panel: a second picture some methods take (load, drop or paste), with its prompt.

It is built from the method's declared inputs of kind "image", so it is enabled exactly for methods
whose Params declare a reference and greyed out for the others. Its object mask is one more mask
purpose on the canvas when the method declares one.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QApplication, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget,
)

from gui.document import Document
from gui.qimage import from_qimage, to_pixmap

PREVIEW_SIDE = 220


class ReferencePanel(QWidget):
    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.input_name: str | None = None
        self.title = QLabel("No reference: the current method takes none.")
        self.title.setWordWrap(True)
        self.picture = QLabel("Drop, paste or load a reference image")
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumHeight(120)
        self.picture.setStyleSheet("border: 1px dashed #666;")
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Describe the reference")
        load, paste = QPushButton("Load…"), QPushButton("Paste")
        buttons = QHBoxLayout()
        buttons.addWidget(load)
        buttons.addWidget(paste)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.picture)
        layout.addLayout(buttons)
        layout.addWidget(self.prompt)
        layout.addStretch(1)
        self.setAcceptDrops(True)
        self.setEnabled(False)
        load.clicked.connect(self._load)
        paste.clicked.connect(self.paste)
        self.prompt.editingFinished.connect(self._prompt_edited)
        doc.methodChanged.connect(self.set_ready)
        doc.referenceChanged.connect(self._show)

    def set_ready(self) -> None:
        from pipeline.methods.base import input_specs
        from pipeline.methods.registry import get_method

        spec = next((s for s in input_specs(get_method(self.doc.method_id).Params) if s.kind == "image"), None)
        self.input_name = spec.name if spec else None
        self.setEnabled(spec is not None)
        self.title.setText(f"{spec.label}: {spec.help}" if spec else "No reference: the current method takes none.")
        self.title.setEnabled(True)
        self._show(self.input_name or "")

    def _show(self, name: str) -> None:
        reference = self.doc.references.get(name) if name == self.input_name else None
        if reference is not None and reference.image is not None:
            shown = reference.image.copy()
            shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            self.picture.setPixmap(to_pixmap(shown))
        else:
            self.picture.clear()
            self.picture.setText("Drop, paste or load a reference image")
        self.prompt.setText(reference.prompt if reference is not None else "")

    def load_file(self, path: Path) -> None:
        from pipeline.images import load_image

        if self.input_name:
            self.doc.set_reference(self.input_name, load_image(path))

    def _load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference image", "", "Images (*.png *.jpg *.jpeg *.webp *.tif)")
        if path:
            self.load_file(Path(path))

    def paste(self) -> None:
        image = QApplication.clipboard().image()
        if self.input_name and not image.isNull():
            self.doc.set_reference(self.input_name, from_qimage(image))

    def _prompt_edited(self) -> None:
        if self.input_name:
            self.doc.set_reference(self.input_name, prompt=self.prompt.text())

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.isEnabled() and event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.load_file(Path(urls[0].toLocalFile()))
            event.acceptProposedAction()
