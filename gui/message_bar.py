"""The bar above the canvas where the window says what went wrong or what it offers.

Errors and notices stay until closed or until another project opens, with their details to copy; an
offer (download a checkpoint) has one button. Rich text, whose links open in the browser, only where
the caller asks for it: an error's text may hold anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QWidget

MESSAGE_LINES = 4  # the message bar's most lines; a longer message scrolls in it


class MessageBar(QFrame):
    """Errors and notices above the canvas, with details to copy and, for an offer, one button; the app
    keeps working. Rich text (an offer's links, which open in the browser) only where asked for: an
    error's text may hold anything. The text scrolls beyond MESSAGE_LINES lines, so a long message never
    makes the window taller than a 1280x800 screen."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setOpenExternalLinks(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.LinksAccessibleByMouse)
        self.details = ""
        self.action = QPushButton()
        self.action.hide()
        self._act: Callable[[], Any] | None = None
        copy, close = QPushButton("Copy details"), QPushButton("✕")
        close.setFixedWidth(28)
        scroll = QScrollArea()
        scroll.setWidget(self.text)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setStyleSheet("QScrollArea, QScrollArea > QWidget > QWidget { background: transparent; }")
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMaximumHeight(MESSAGE_LINES * self.fontMetrics().lineSpacing() + 8)
        scroll.setMinimumHeight(self.fontMetrics().lineSpacing() + 8)
        layout = QHBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.action)
        layout.addWidget(copy)
        layout.addWidget(close)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.details or self.text.text()))
        close.clicked.connect(self.hide)
        self.action.clicked.connect(lambda: self._act() if self._act is not None else None)
        self.hide()

    def show_message(self, text: str, details: str = "", error: bool = True,
                     action: tuple[str, Callable[[], Any]] | None = None, rich: bool = False) -> None:
        """Show `text` (HTML when `rich`), with `action`'s button (its label and what it does) if given."""
        self.text.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
        self.text.setText(text)
        self.details = details or text
        self._act = action[1] if action else None
        self.action.setText(action[0] if action else "")
        self.action.setVisible(action is not None)
        self.setStyleSheet("MessageBar { background: %s; }" % ("#5a2a2a" if error else "#2a3f5a"))
        self.show()
