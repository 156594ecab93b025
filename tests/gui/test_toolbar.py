"""A stable toolbar and no internal names (issue 21, item 3): Undo and Redo keep their width whatever
they would undo, so Run edit never moves under the mouse; what they undo is in their tooltip, in
words (blend words, not blend_words)."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QLabel, QToolBar

from tests.gui.test_window import open_photo, run_and_wait, type_prompts


def buttons(window):
    toolbar = window.findChild(QToolBar, "toolbar-main")
    return {name: toolbar.widgetForAction(window.actions[name]) for name in ("undo", "redo", "run", "compare")}


def test_undo_and_run_do_not_move_when_the_command_changes(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    QApplication.processEvents()
    before = {name: button.geometry() for name, button in buttons(window).items()}
    window.doc.set_param("blend_words", ["house"])
    window.doc.set_param("self_replace", [0.1, 0.5])
    window.doc.undo.undo()  # Redo has a command too now
    QApplication.processEvents()
    after = {name: button.geometry() for name, button in buttons(window).items()}
    assert after == before
    undo, redo = window.actions["undo"], window.actions["redo"]
    assert (undo.text(), redo.text()) == ("&Undo", "&Redo")
    assert undo.toolTip() == "Undo Change blend words" and redo.toolTip() == "Redo Change self replace"
    undo.trigger()
    assert window.doc.params["blend_words"] == [] and redo.isEnabled()
    window.doc.undo.clear()
    assert not undo.isEnabled() and undo.toolTip() == "Nothing to undo"


def test_no_parameter_identifier_in_the_method_form_or_the_history(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    labels = [label.text() for label in window.method.findChildren(QLabel) if label.isVisibleTo(window.method)]
    assert "blend words" in labels and not [text for text in labels if "_" in text]
    type_prompts(qtbot, window)
    window.doc.set_param("blend_words", ["house"])
    assert type(run_and_wait(qtbot, window)).__name__ == "Done"
    item = window.history.list.item(0)
    assert "Prompt-to-Prompt" in item.text() and "\np2p" not in item.text()
    assert "blend words: [\"house\"]" in item.toolTip() and "_" not in item.toolTip()


def test_the_stage_is_written_as_its_label(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    seen = []
    window.session.progressed.connect(lambda _event: seen.append(window.status_stage.text()))
    run_and_wait(qtbot, window)
    assert any(text.startswith("DDIM inversion: ") for text in seen) and not any("Ddim" in text for text in seen)
