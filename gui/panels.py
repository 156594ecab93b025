"""Dock panels whose rows scroll instead of being squeezed.

Why: a dock in a short window (1280x800, with a tall timeline) can be given less height than its rows
need, and a column holding word-wrapped text (a note, a legend) under-reports what it needs, so Qt
squeezed rows on top of each other (the Tools panel's Size, Hardness and Mask at 8 px; the chip boxes
under the next prompt). Inside a scroll area the rows keep their height and the panel scrolls; the
area asks for the rows' whole height (up to TALLEST), so they show whole wherever the window has room.

The timeline's dock is the exception (FittingScrollArea): a bottom dock spans the window, so a
minimum as tall as its rows (821-837 px of window for three stages and five bands) made the window
taller than a 1280x800 screen. Its area asks for little as its minimum and instead grows the dock
to its widget's height (up to a share of the screen) whenever that grows, taking the room from the
canvas; beyond that it scrolls. A dock the artist made taller stays so.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget

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


class FittingScrollArea(QScrollArea):
    """Shows `widget` whole up to `share` of the screen's available height; scrolls it beyond that."""

    def __init__(self, widget: QWidget, share: float = 0.35, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.share = share
        self.setWidgetResizable(True)
        self.setWidget(widget)
        widget.installEventFilter(self)

    def wanted_height(self) -> int:
        """The widget's whole minimum height plus the frame, up to the screen's share."""
        widget = self.widget()
        need = max(widget.minimumHeight(), widget.minimumSizeHint().height()) + 2 * self.frameWidth()
        screen = self.screen()
        return min(need, int(screen.availableGeometry().height() * self.share)) if screen is not None else need

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self.wanted_height())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # The widget's minimum changes with its content (a run's stages): grow the dock to show it.
        if watched is self.widget() and event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Resize):
            self.updateGeometry()
            self._grow()
        return super().eventFilter(watched, event)

    def _grow(self) -> None:
        dock = self.parentWidget()
        window = dock.parentWidget() if isinstance(dock, QDockWidget) else None
        missing = self.wanted_height() - self.height()
        if isinstance(window, QMainWindow) and missing > 0 and self.isVisible():
            window.resizeDocks([dock], [dock.height() + missing], Qt.Orientation.Vertical)
