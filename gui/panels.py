"""Dock panels whose rows scroll instead of being squeezed.

Why: a dock in a short window (1280x800, with a tall timeline) can be given less height than its rows
need, and a column holding word-wrapped text (a note, a legend) under-reports what it needs, so Qt
squeezed rows on top of each other (the Tools panel's Size, Hardness and Mask at 8 px; the chip boxes
under the next prompt). Inside a scroll area the rows keep their height and the panel scrolls; the
area asks for the rows' whole height (up to TALLEST), so they show whole wherever the window has room.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

TALLEST = 460  # pixels a panel asks for at most before it scrolls


class _RowsArea(QScrollArea):
    """A scroll area whose smallest comfortable height is its rows' own (up to TALLEST)."""

    def minimumSizeHint(self) -> QSize:
        rows = self.widget()
        wanted = rows.sizeHint().height() + 2 * self.frameWidth() if rows is not None else 0
        return QSize(super().minimumSizeHint().width(), min(wanted, TALLEST))


def scrolling_rows(panel: QWidget) -> QVBoxLayout:
    """Give `panel` a frameless vertical scroll area and return the layout its rows go in."""
    rows = QWidget()
    scroll = _RowsArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(rows)
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(rows)
