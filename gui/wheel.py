"""The mouse wheel changes a field's value only when the field has focus.

Why: Qt's spin boxes, sliders and combo boxes take the wheel whenever the pointer is over them, so
scrolling down a form changed whatever passed under the pointer (in the Method panel a new user set
inner steps from 10 to 7, which costs a new inversion). Here such a field ignores the wheel until it
has been clicked or tabbed into (and the wheel no longer gives it focus); meanwhile the wheel scrolls
the panel it sits in, as it does over the panel's labels.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea, QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox, QScrollBar, QWidget,
)

GUARDED = (QAbstractSpinBox, QAbstractSlider, QComboBox)


class WheelGuard(QObject):
    """An event filter for value fields: a wheel event over a field without focus scrolls the nearest
    scroll area around it instead (and is dropped where there is none)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.Wheel or not isinstance(watched, QWidget) or watched.hasFocus():
            return False
        area = _scroll_area(watched)
        if area is not None:
            QApplication.sendEvent(area.verticalScrollBar(), event)
        return True


def guard_wheel(root: QWidget) -> None:
    """Guard every value field in `root` (and `root` itself; scroll bars are not fields); call again after
    adding fields (a guarded field is not guarded twice)."""
    guard = _guard_for(root)
    fields = [root] if isinstance(root, GUARDED) else []
    for widget in fields + root.findChildren(QWidget):
        if isinstance(widget, GUARDED) and not isinstance(widget, QScrollBar) and not widget.property("wheelGuarded"):
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel no longer gives focus
            widget.installEventFilter(guard)
            widget.setProperty("wheelGuarded", True)


def _guard_for(root: QWidget) -> WheelGuard:
    """One guard per guarded tree, owned by its root (so it lives as long as the fields)."""
    guard = root.findChild(WheelGuard, "wheelGuard", Qt.FindChildOption.FindDirectChildrenOnly)
    if guard is None:
        guard = WheelGuard(root)
        guard.setObjectName("wheelGuard")
    return guard


def _scroll_area(widget: QWidget) -> QAbstractScrollArea | None:
    """The nearest scroll area that holds `widget` (a combo box's own popup list does not count)."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QAbstractScrollArea):
        parent = parent.parentWidget()
    return parent
