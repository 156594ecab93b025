"""A scroll area for a dock whose widget should show whole when the window has room for it.

The timeline asks for the height of all its rows and bands. As a dock's widget that made the window
taller than a 1280x800 screen (821-837 px for a run of three stages and five bands) once anything
re-ran the layout; in a plain QScrollArea the dock got about 70 px and scrolled every row but the
first away. This one asks for little as its minimum, so the window fits any screen, and whenever its
widget grows it asks its main window to make the dock tall enough (up to a share of the screen),
taking the room from the canvas as the timeline's minimum used to; beyond that it scrolls. A dock
the artist made taller stays so.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow, QScrollArea, QWidget


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
