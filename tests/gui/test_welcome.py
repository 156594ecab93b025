"""The welcome view over an empty window (gui.welcome): demo scenes from the registry, the user's own
models, a download only on request and plain words offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.demo_model import DEMO_EDIT, DemoEdit
from tests.gui.conftest import DEMO_PHOTO, make_window


@pytest.fixture
def app_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "app-data"
    monkeypatch.setattr("gui.welcome.QStandardPaths.writableLocation", lambda _where: str(folder))
    return folder


def test_an_empty_window_shows_the_welcome_view_with_every_registered_scene(qtbot, settings, fake_engine,
                                                                             app_data, monkeypatch) -> None:
    castle = DemoEdit(DEMO_PHOTO, "a house in a meadow", "a castle in a meadow")
    monkeypatch.setattr("pipeline.demo_model.DEMO_SCENES", (DEMO_EDIT, castle))
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        assert window.welcome.isVisible() and window.welcome.geometry() == window.canvas.rect()
        assert [b.text().split(":")[0] for b in window.welcome.scene_buttons] == ["House", "House"]
        assert "a castle in a meadow" in window.welcome.scene_buttons[1].text()
        assert window.welcome.choose_model.isEnabled()  # the engine is ready
    finally:
        window.close()


def test_trying_a_scene_opens_a_copy_with_its_prompts_and_hides_the_view(window, qtbot, app_data) -> None:
    window.welcome.try_scene(0)
    qtbot.waitUntil(lambda: window.doc.project_path is not None, timeout=30_000)
    assert window.doc.project_path == app_data / "demo-scenes" / "house.retake"  # not inside the installation
    assert (app_data / "demo-scenes" / "house.png").read_bytes() == DEMO_EDIT.image.read_bytes()
    assert (window.doc.source_prompt, window.doc.target_prompt) == (DEMO_EDIT.source, DEMO_EDIT.target)
    assert not window.welcome.isVisible()


def test_a_scene_switches_back_to_the_demo_model_and_says_so(window, qtbot, app_data) -> None:
    window.settings.set("model", "/models/v1-5.safetensors")
    window.welcome.try_scene(0)
    assert window.settings.get("model") == "demo" and "demo model" in window.message.text.text()


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
