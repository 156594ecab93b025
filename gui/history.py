"""The results history: every edit of the project with its prompt and parameters.

Clicking an edit shows it on the canvas (compare it with the source by the split slider);
"Restore settings" puts its prompts, method and parameters back into the form as one undoable step.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QSize
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from gui.document import Document
from gui.qimage import to_pixmap

THUMB = 72


class HistoryPanel(QWidget):
    def __init__(self, doc: Document, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self._icons: dict[Path, QIcon] = {}
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.restore = QPushButton("Restore settings")
        self.restore.setToolTip("Put this edit's prompts, method and parameters back (undoable).")
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.restore)
        self.list.currentRowChanged.connect(self._on_row)
        self.restore.clicked.connect(self.restore_current)
        doc.resultsChanged.connect(self._rebuild)
        doc.currentResultChanged.connect(self._on_current)
        self._rebuild()

    def _rebuild(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for entry in self.doc.results:
            item = QListWidgetItem(f"#{entry.edit_id}  {entry.target_prompt}\n{entry.method}")
            item.setToolTip(f"Source: {entry.source_prompt}\nTarget: {entry.target_prompt}\nMethod: {entry.method}\n"
                            f"{json.dumps(entry.params, indent=1)}")
            icon = self._icon(entry.path)
            if icon is not None:
                item.setIcon(icon)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self._on_current()

    def _icon(self, path: Path) -> QIcon | None:
        """Thumbnails are made once per result file (results never change)."""
        if path not in self._icons and path.is_file():
            with Image.open(path) as image:
                thumb = image.convert("RGB")
            thumb.thumbnail((THUMB, THUMB))
            self._icons[path] = QIcon(to_pixmap(thumb))
        return self._icons.get(path)

    def _on_current(self) -> None:
        self.list.blockSignals(True)
        self.list.setCurrentRow(self.doc.current_result)
        self.list.blockSignals(False)
        self.restore.setEnabled(self.doc.current_result >= 0)

    def _on_row(self, row: int) -> None:
        self.doc.set_current_result(row)

    def restore_current(self) -> None:
        entry = self.doc.result()
        if entry is not None:
            self.doc.restore_settings(entry.source_prompt, entry.target_prompt, entry.method, entry.params,
                                      f"Restore settings of #{entry.edit_id}")
