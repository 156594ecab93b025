"""Issue 21, item 9: Export starts beside the project with a name; recent projects are absolute paths
(old relative ones normalised); the Models dialog closes with a button; deleting a preset asks first;
an empty window says how to start; Help opens the shipped user guide; a photo smaller than one latent
cell is refused in one sentence; closing during a run names the run and offers to cancel it (and save)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox, QPushButton

import gui.guide
from gui.settings import AppSettings
from tests.gui.test_window import open_photo, run_and_wait, type_prompts

ROOT = Path(__file__).resolve().parents[2]


def test_export_starts_beside_the_project_named_for_the_photo_and_the_edit(qtbot, window, photo, monkeypatch):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    final = run_and_wait(qtbot, window)
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args: (asked.append(args), ("", ""))[1])
    window.actions["export"].trigger()
    (_parent, _title, start, _filters), = asked
    assert Path(start) == photo.parent / f"house-edit-{final.edit_id}.png"


def test_recent_projects_are_absolute_and_old_relative_ones_are_normalised(settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept.retake").mkdir()
    settings.add_recent(Path("a.retake"))
    assert settings.recent() == [str(tmp_path / "a.retake")]
    settings.store.setValue("recent", ["kept.retake", "gone.retake", "/elsewhere/b.retake", "kept.retake"])
    assert settings.recent() == [str(tmp_path / "kept.retake"), "/elsewhere/b.retake"]
    reread = AppSettings(QSettings(settings.store.fileName(), QSettings.Format.IniFormat))
    settings.add_recent(Path("c.retake"))
    assert all(os.path.isabs(entry) for entry in reread.recent())


def test_the_models_dialog_has_a_close_button(qtbot, window):
    dialog = window.open_models()
    assert dialog.isVisible() and dialog.close_button.text() == "Close"
    dialog.close_button.click()
    assert not dialog.isVisible()


@pytest.mark.parametrize("answer, kept", [(QMessageBox.StandardButton.Cancel, True),
                                          (QMessageBox.StandardButton.Yes, False)])
def test_deleting_a_preset_asks_first(qtbot, window, photo, monkeypatch, answer, kept):
    open_photo(qtbot, window, photo)
    method = window.method
    method.save_preset("soft")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: (asked.append(args[2]), answer)[1])
    method.delete_preset()
    assert asked == ["Delete the preset soft of Prompt-to-Prompt? This cannot be undone."]
    assert ("soft" in window.settings.presets("p2p")) == kept


def test_an_empty_window_says_how_to_start(qtbot, window):
    assert window.welcome.isVisible()
    text = " ".join(label.text() for label in window.welcome.findChildren(type(window.status_stage)))
    assert "Open a photo" in text and "drop it on the window" in text and "demo scene" in text


def test_help_opens_the_user_guide_that_ships(qtbot, window):
    guide = window.show_guide()
    assert guide is not None and guide.isVisible()
    assert guide.browser.source().toLocalFile() == str(ROOT / "docs" / "user-guide.md")
    assert guide.browser.toPlainText().startswith("Retake user guide")
    assert window.actions["guide"] in window.menuBar().actions()[-1].menu().actions()
    guide.close()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "retake_docs" in setuptools["packages"] and setuptools["package-dir"]["retake_docs"] == "docs"
    assert "user-guide.md" in setuptools["package-data"]["retake_docs"]


def test_an_installed_guide_is_found_as_retake_docs(tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "retake_docs"
    installed.mkdir(parents=True)
    (installed / "user-guide.md").write_text("# Retake user guide\n")
    monkeypatch.setattr(gui.guide, "__file__", str(tmp_path / "site-packages" / "gui" / "guide.py"))
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    assert gui.guide.guide_path() == installed / "user-guide.md"


def test_a_photo_smaller_than_a_latent_cell_is_refused_in_one_sentence(qtbot, window, tmp_path):
    tiny = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), "red").save(tiny)
    assert not window.open_path(tiny)
    assert window.message.text.text().startswith("The photo is 1x1 pixels: its short side is smaller than one "
                                                 "latent cell of the model (8 pixels), the least it can edit.")
    assert window.doc.project_path is None and not (tmp_path / "dot.retake").exists()


def answer_when_asked(label: str, seen: list) -> None:
    """Click the button `label` of the message box the window is about to show."""
    def click() -> None:
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        buttons = box.findChildren(QPushButton)
        next((b for b in buttons if b.text() == label), buttons[-1]).click()  # another box: fail, not hang

    QTimer.singleShot(0, click)


def test_closing_during_a_run_names_it_and_cancels_only_when_told(qtbot, window, fake_engine, photo):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)  # unsaved changes
    fake_engine.delay = 0.3
    assert window.run_edit()
    qtbot.waitUntil(lambda: window.session.run.step > 0, timeout=5000)
    seen: list = []
    answer_when_asked("Keep running", seen)
    window.close()
    assert window.isVisible() and window.session.running
    assert seen[0].startswith("An edit is running (") and "has unsaved changes" in seen[0]
    answer_when_asked("Cancel the run, save and close", seen)
    window.close()
    assert not window.isVisible() and not window.doc.dirty  # cancelled, saved, closed
