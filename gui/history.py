"""The results history: every edit of the project with its prompt and parameters.

Clicking an edit shows it on the canvas (compare it with the source by the split slider);
"Restore settings" asks the window to put its prompts, method and parameters back into the form as
one undoable step (checked first, like any settings from outside the document). The history and its
thumbnails are the session's, read on its project-I/O thread; nothing here reads a file.
"""

from __future__ import annotations

import json

from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from gui.document import method_title
from gui.project_io import THUMBNAIL_SIDE
from gui.qimage import to_pixmap
from gui.session import EditSession
from pipeline.params import param_label  # torch-free


class HistoryPanel(QWidget):
    restoreRequested = Signal(object)  # the ResultEntry whose settings to restore

    def __init__(self, session: EditSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self.restore = QPushButton("Restore settings")
        self.restore.setToolTip("Put this edit's prompts, method and parameters back (undoable).")
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.restore)
        self.list.currentRowChanged.connect(self._on_row)
        self.restore.clicked.connect(self.restore_current)
        session.historyChanged.connect(self._rebuild)
        session.currentResultChanged.connect(self._on_current)
        self._rebuild()

    def _rebuild(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for entry in self.session.results:
            method = method_title(entry.method)
            item = QListWidgetItem(f"#{entry.edit_id}  {entry.target_prompt}\n{method}")
            values = "\n".join(f"{param_label(name)}: {json.dumps(value)}" for name, value in entry.params.items())
            item.setToolTip(f"Source: {entry.source_prompt}\nTarget: {entry.target_prompt}\nMethod: {method}\n{values}")
            if entry.thumbnail is not None:
                item.setIcon(QIcon(to_pixmap(entry.thumbnail)))
            self.list.addItem(item)
        self.list.blockSignals(False)
        self._on_current()

    def _on_current(self) -> None:
        self.list.blockSignals(True)
        self.list.setCurrentRow(self.session.current_result)
        self.list.blockSignals(False)
        self.restore.setEnabled(self.session.current_result >= 0)

    def _on_row(self, row: int) -> None:
        self.session.set_current_result(row)

    def restore_current(self) -> None:
        entry = self.session.result()
        if entry is not None:
            self.restoreRequested.emit(entry)
