"""The welcome view over an empty window (gui.welcome) and File > Open demo scene (gui.demo_scenes): both
list the one registry of demo scenes (pipeline.demo_scenes) and open a scene the same way; the user's own
models, a download only on request and plain words offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QLabel, QPushButton, QStyle, QStyleOptionButton

from gui.demo_scenes import DemoSceneDialog, choose_demo_scene
from pipeline.demo_scenes import SCENES_DIR, list_scenes
from tests.gui.conftest import make_window

SCENES = list_scenes()


@pytest.fixture
def app_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "app-data"
    monkeypatch.setattr("gui.demo_scenes.QStandardPaths.writableLocation", lambda _where: str(folder))
    return folder


def scene_buttons(qtbot, window) -> list:
    qtbot.waitUntil(lambda: len(window.welcome.scene_buttons) == len(SCENES), timeout=30_000)
    return window.welcome.scene_buttons


def choose_in_dialog(monkeypatch, name: str, seen: list) -> None:
    """Stand in for the artist in File > Open demo scene: pick the scene `name` and press Open."""
    def exec_(dialog: DemoSceneDialog) -> int:
        row = [scene.name for scene in dialog.scenes].index(name)
        dialog.list.setCurrentRow(row)
        seen.append((dialog.list.count(), [dialog.list.item(i).text() for i in range(dialog.list.count())],
                     dialog.note.text()))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(DemoSceneDialog, "exec", exec_)


def test_an_empty_window_offers_every_scene_of_the_registry(qtbot, settings, fake_engine, app_data) -> None:
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        assert window.welcome.isVisible() and window.welcome.geometry() == window.canvas.rect()
        buttons = scene_buttons(qtbot, window)
        for scene, button in zip(SCENES, buttons):  # the whole title (wrapped), with its note in the tooltip
            assert button.title.text() == scene.title == button.accessibleName()
            assert button.toolTip().startswith(scene.title) and scene.note in button.toolTip()
        assert window.welcome.choose_model.isEnabled()  # the engine is ready
    finally:
        window.close()


def test_a_scene_from_the_welcome_view_opens_with_its_prompts_method_parameters_and_inputs(window, qtbot,
                                                                                         app_data) -> None:
    index, scene = next((i, s) for i, s in enumerate(SCENES) if s.name == "house-colour")
    scene_buttons(qtbot, window)[index].click()
    qtbot.waitUntil(lambda: window.doc.project_path is not None, timeout=30_000)
    assert window.doc.project_path == app_data / "demo-scenes" / "house-colour.retake"  # not in the installation
    assert (window.doc.source_prompt, window.doc.target_prompt) == (scene.source, scene.target)
    assert window.doc.method_id == "p2p"
    assert {name: window.doc.params[name] for name in scene.params} == scene.params
    assert window.doc.mask("edit_mask").any()  # the scene's painted region came with it
    assert not window.welcome.isVisible()


def test_file_open_demo_scene_lists_titles_and_notes_and_opens_the_one_chosen(window, qtbot, app_data,
                                                                            monkeypatch) -> None:
    scene = next(s for s in SCENES if s.name == "cat-from-reference")
    seen: list = []
    choose_in_dialog(monkeypatch, scene.name, seen)
    assert window.actions["demo_scene"] in window.menuBar().actions()[0].menu().actions()
    window.actions["demo_scene"].trigger()
    qtbot.waitUntil(lambda: window.doc.project_path is not None, timeout=30_000)
    count, texts, note = seen[0]
    assert count == len(SCENES) and all(s.title in text for s, text in zip(SCENES, texts))
    assert scene.note in note and scene.benchmark.source in note
    assert window.doc.project_path == app_data / "demo-scenes" / "cat-from-reference.retake"
    assert (window.doc.method_id, window.doc.target_prompt) == ("specref", scene.target)
    assert window.doc.references["reference"].prompt == scene.input_prompts["reference"]
    assert window.doc.references["reference"].image is not None


def test_a_scene_opened_again_keeps_what_the_artist_did_to_it(window, qtbot, app_data, monkeypatch) -> None:
    scene = next(s for s in SCENES if s.name == "dog-stands-up")
    choose_in_dialog(monkeypatch, scene.name, [])
    assert choose_demo_scene(window)
    window.doc.set_prompt("source", "a big red striped dog")
    window.save()
    qtbot.waitUntil(lambda: not window.doc.dirty, timeout=30_000)
    manifest = (window.doc.project_path / "project.json").read_bytes()
    assert choose_demo_scene(window)
    assert window.doc.project_path == app_data / "demo-scenes" / "dog-stands-up.retake"
    assert (window.doc.source_prompt, window.doc.target_prompt) == ("a big red striped dog", scene.target)
    assert (window.doc.project_path / "project.json").read_bytes() == manifest  # not made again


def test_a_scene_switches_to_the_demo_model_and_says_so(window, qtbot, app_data) -> None:
    window.settings.set("model", "/models/v1-5.safetensors")
    scene_buttons(qtbot, window)
    window.welcome.try_scene(0)
    assert window.settings.get("model") == "demo" and "demo model" in window.message.text.text()


def test_a_damaged_scene_file_is_said_and_nothing_opens(window, qtbot, app_data, monkeypatch, tmp_path) -> None:
    folder = tmp_path / "scenes"
    shutil.copytree(SCENES_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "house-colour.json").write_text("{not json")
    monkeypatch.setattr("pipeline.demo_scenes.SCENES_DIR", folder)
    opened: list = []
    monkeypatch.setattr(DemoSceneDialog, "exec", lambda dialog: opened.append(dialog) or 1)
    assert not choose_demo_scene(window)
    assert not opened and window.doc.project_path is None
    assert "house-colour.json cannot be read" in window.message.text.text()
    assert not np.any([path.exists() for path in (app_data / "demo-scenes").glob("*")])


def test_offline_the_download_says_so_and_how_to_add_the_file(window, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    window.settings.set("models_dir", str(tmp_path / "models"))
    assert not window.welcome.download()
    note = window.welcome.note.text()
    assert "work offline" in note and "v1-5-pruned-emaonly.safetensors" in note and str(tmp_path / "models") in note
    assert not window.welcome.downloader.running


def test_a_file_already_downloaded_is_used_without_downloading(qtbot, window, tmp_path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "v1-5-pruned-emaonly.safetensors").write_bytes(b"checked earlier")
    window.settings.set("models_dir", str(folder))
    assert window.welcome.download()
    chosen = str(folder / "v1-5-pruned-emaonly.safetensors")
    qtbot.waitUntil(lambda: window.settings.get("model") == chosen, timeout=5000)  # recorded once it loaded
    assert not window.welcome.downloader.running


def cut_texts(view) -> list[str]:
    """The texts of the view's visible buttons that do not fit whole in the space the button gives them:
    a push button's one line in its contents rect (less its icon), a wrapped label's lines in its rect."""
    cut = []
    for button in view.findChildren(QPushButton):
        if not button.isVisible():
            continue
        if button.text():
            option = QStyleOptionButton()
            button.initStyleOption(option)
            room = button.style().subElementRect(QStyle.SubElement.SE_PushButtonContents, option, button).width()
            if not button.icon().isNull():
                room -= button.iconSize().width() + 4
            if button.fontMetrics().horizontalAdvance(button.text()) > room:
                cut.append(button.text())
        for label in button.findChildren(QLabel):
            if label.text() and label.isVisible():
                needed = label.fontMetrics().boundingRect(label.contentsRect(), Qt.TextFlag.TextWordWrap, label.text())
                if needed.width() > label.contentsRect().width() or needed.height() > label.contentsRect().height():
                    cut.append(label.text())
    return cut


@pytest.mark.parametrize("size", [(1280, 800), (1400, 900)])
def test_every_welcome_button_shows_its_whole_text(qtbot, settings, fake_engine, app_data, size) -> None:
    """At 1280x800 the first scene's title was cut by its button ("This cat, from a reference picture,")."""
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        window.resize(*size)
        buttons = scene_buttons(qtbot, window)
        qtbot.wait(200)  # the layout settles at the new size
        assert window.size().toTuple() == size
        assert [button.accessibleName() for button in buttons] == [scene.title for scene in SCENES]
        assert cut_texts(window.welcome) == []
        assert all(button.isVisible() and window.welcome.rect().contains(button.geometry().translated(
            button.parentWidget().mapTo(window.welcome, button.geometry().topLeft()) - button.geometry().topLeft()))
            for button in buttons)
    finally:
        window.close()


def test_the_empty_window_shows_no_zoom_box_over_the_welcome_view(qtbot, window, photo) -> None:
    """The zoom percentage, empty before a photo is shown, was a dark box over the welcome card's corner."""
    assert window.welcome.isVisible() and not window.canvas.zoom_label.isVisible()
    assert window.open_path(photo)
    qtbot.waitUntil(lambda: window.canvas.zoom_label.isVisible(), timeout=5000)
    assert window.canvas.zoom_label.text().endswith("%")
