"""The shortcuts dialog fits the screen it opens on (issue 21, item 6): at 1280x800 its OK button was
below the screen's edge. The table scrolls; the dialog and its OK button lie within the screen."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect

import gui.shortcuts


@pytest.mark.parametrize("screen", [None, QRect(0, 0, 1280, 800), QRect(0, 0, 1024, 600)])
def test_the_shortcuts_dialog_and_its_ok_button_fit_the_screen(qtbot, window, monkeypatch, screen):
    if screen is not None:  # the offscreen platform's own screen is 800x800
        monkeypatch.setattr(gui.shortcuts, "available_geometry", lambda _widget: screen)
    available = gui.shortcuts.available_geometry(window)
    dialog = window.show_shortcuts()
    qtbot.waitExposed(dialog)
    assert available.contains(dialog.frameGeometry())
    ok = dialog.buttons.buttons()[0]
    corner = ok.mapToGlobal(QPoint(ok.width(), ok.height()))
    assert ok.isVisible() and available.contains(corner)
    assert dialog.table.rowCount() == len(window.shortcut_table()) + 3
    assert dialog.table.verticalScrollBar().maximum() > 0  # the rest is a scroll away
    ok.click()
    assert not dialog.isVisible()
