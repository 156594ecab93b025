"""Start-up, settings, drops and pastes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication

from gui.settings import SettingsDialog
from gui.window import MainWindow
from tests.gui.test_window import open_photo

ROOT = Path(__file__).resolve().parents[2]


def test_the_window_modules_do_not_import_torch():
    """The window must show before torch loads: torch is imported on the worker thread only."""
    code = "import sys, gui.app, gui.window; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_settings_dialog_persists_and_decides_requests(qtbot, settings):
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.model.setText("/models/sd-v1-5")
    dialog.device.setCurrentText("cpu")
    dialog.max_side.setValue(256)
    assert dialog.fast_path.currentData() == "on"  # the default
    dialog.fast_path.setCurrentIndex(dialog.fast_path.findData("off"))
    dialog.accept()  # the model and device are tried by the window and recorded once loaded (test_model_choice)
    assert settings.get("model") == "demo" and settings.get("max_side") == 256
    assert settings.request_options(dialog.load_values()) == {"model": "/models/sd-v1-5", "device": "cpu",
                                                              "dtype": None, "max_side": 256, "area": None,
                                                              "area_padding": 32, "feather": 4, "fast": False}


def test_the_image_encoder_setting_reaches_requests_only_when_set(qtbot, settings, tmp_path):
    from gui.document import DocumentState
    from gui.project_io import build_request

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    assert "image_encoder" not in settings.request_options()  # unset: the project's, else beside the model
    dialog.image_encoder.setText("  /models/clip-vit-b16 ")
    dialog.accept()
    assert settings.request_options()["image_encoder"] == "/models/clip-vit-b16"
    request = build_request(tmp_path / "p.retake", DocumentState(), settings.request_options(), tmp_path)
    assert request.image_encoder == "/models/clip-vit-b16"
    assert SettingsDialog(settings).image_encoder.text() == "/models/clip-vit-b16"


def test_dropping_a_photo_opens_its_project(qtbot, window, photo):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photo))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.doc.project_path == photo.with_name("house.retake")


def test_pasting_an_image_makes_a_project_in_the_projects_folder(qtbot, window, settings, tmp_path):
    settings.set("projects_dir", str(tmp_path / "projects"))
    from gui.qimage import to_qimage

    QGuiApplication.clipboard().setImage(to_qimage(Image.new("RGB", (96, 64), "orange")))
    window.actions["paste"].trigger()
    assert window.doc.image is not None and window.doc.image.size == (96, 64)
    assert window.doc.project_path.parent == tmp_path / "projects"


def test_reopening_the_same_photo_reuses_its_project(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    first = window.doc.project_path
    assert window.open_path(photo)
    assert window.doc.project_path == first


def test_autosave_writes_unsaved_changes(qtbot, window, photo):
    from pipeline.project import Project

    open_photo(qtbot, window, photo)
    window.doc.set_prompt("source", "a house")
    assert window.isWindowModified()
    window.autosave_now()  # in the background, on the session's project-I/O thread
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=10_000)
    assert Project.open(window.doc.project_path).settings.source_prompt == "a house"


def test_save_as_copies_the_project_and_carries_on_there(qtbot, window, photo, tmp_path):
    from pipeline.project import Project

    open_photo(qtbot, window, photo)
    window.doc.set_prompt("source", "a house")
    copy = tmp_path / "copy.retake"
    assert window.save_as(copy)
    assert window.doc.project_path == copy and "copy.retake" in window.windowTitle()
    assert Project.open(copy).settings.source_prompt == "a house"
    assert Project.open(photo.with_name("house.retake")).settings.source_prompt == ""


def test_painting_does_not_drop_references_to_none_or_true(qtbot, window, photo):
    """PySide6 6.12.0 releases a reference to None (or True) it never took on many calls: on Python
    3.11, where they are not immortal, the app dies ("deallocating None") after some ten thousand
    brush moves. Every stroke move here must leave their reference counts where they were."""
    import gc

    from tests.gui.test_window import view_point

    open_photo(qtbot, window, photo)
    viewport = window.canvas.viewport()

    def stroke() -> None:
        qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 100, 100))
        for i in range(200):
            qtbot.mouseMove(viewport, view_point(window, 100 + i, 100 + i // 2))
        qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 300, 200))

    stroke()  # first-use allocations
    gc.collect()
    before = sys.getrefcount(None), sys.getrefcount(True)
    stroke()
    gc.collect()
    after = sys.getrefcount(None), sys.getrefcount(True)
    assert after[0] - before[0] > -50 and after[1] - before[1] > -50, (before, after)  # 6.12.0: hundreds fewer


def test_after_start_up_the_loaded_objects_are_out_of_the_collectors_reach_and_it_runs(qtbot, settings):
    """Full collections over torch's millions of objects froze the window for up to 0.45 s in a run;
    start-up and each model load move what is alive then out of the collector's reach (gc.freeze),
    and the collector, paused while the engine imports, runs again afterwards, even after a failure."""
    import gc

    from tests.gui.conftest import make_window
    from tests.gui.fakes import FakeEngine

    def failing():
        raise RuntimeError("no engine here")

    gc.unfreeze()  # whatever earlier tests' windows froze
    window = make_window(qtbot, settings, FakeEngine)
    try:
        qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        window.close()
    broken = MainWindow(settings, engine_factory=failing)
    try:
        qtbot.waitUntil(lambda: broken.status_engine.text() == "Engine: failed", timeout=5000)
        assert gc.isenabled()
    finally:
        broken.close()
