"""The keyboard shortcuts dialog (F1): every command with its keys, in a table that scrolls.

It lists some sixty rows; as a message box it grew taller than a 1280x800 screen and its OK button
could not be reached. The table scrolls instead, and the dialog is sized to the screen it opens on.
"""

from __future__ import annotations

from PySide6.QtCore import QRect
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

SCREEN_SHARE = 0.85
"""The most of the available screen height (and width) the dialog takes."""


def available_geometry(widget: QWidget | None) -> QRect:
    """The screen area free of task bars, on the screen `widget` is on (the primary one without it)."""
    screen = widget.screen() if widget is not None else QGuiApplication.primaryScreen()
    return screen.availableGeometry()


class ShortcutsDialog(QDialog):
    """Commands and their keys, two columns; OK closes it."""

    def __init__(self, rows: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Command", "Keys"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        for row, (name, keys) in enumerate(rows):
            self.table.setItem(row, 0, QTableWidgetItem(name))
            self.table.setItem(row, 1, QTableWidgetItem(keys))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.buttons)
        self.fit(available_geometry(parent))

    def fit(self, available: QRect) -> None:
        """As tall as the table wants, but no more than SCREEN_SHARE of `available`; the table scrolls."""
        table = self.table
        wanted_width = sum(table.columnWidth(c) for c in range(2)) + table.verticalScrollBar().sizeHint().width() + 60
        wanted_height = (table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(table.rowCount()))
                         + self.buttons.sizeHint().height() + 60)
        self.resize(min(wanted_width, int(available.width() * SCREEN_SHARE)),
                    min(wanted_height, int(available.height() * SCREEN_SHARE)))
        frame = self.frameGeometry()
        frame.moveCenter(available.center())
        self.move(frame.topLeft())
