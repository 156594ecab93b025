"""A model choice takes effect only once it has loaded (issue 21, item 1): a folder that is not a model
or a download that fails is never recorded, the status bar does not call it loaded before it is, the
model in use stays and still runs, and the artist reads why in one sentence."""

from __future__ import annotations

import threading

from PySide6.QtCore import QSettings

from gui.settings import AppSettings, SettingsDialog
from tests.gui.test_window import open_photo, run_and_wait, type_prompts


def test_a_folder_that_is_not_a_model_is_not_kept_and_the_model_in_use_still_runs(qtbot, window, fake_engine,
                                                                                   settings, photo, tmp_path):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    fake_engine.missing_models.add(str(folder))
    fake_engine.preload_gate = threading.Event()  # the load takes its time
    window.use_model(str(folder))
    # Before the engine takes the choice up (it may be busy with a run), the model in use is the one
    # loaded: the status must not pair that state with the name being tried.
    assert "holiday-photos loaded" not in window.status_model.text(), window.status_model.text()
    qtbot.waitUntil(lambda: window.session.model_state == "loading…", timeout=5000)
    assert settings.get("model") == "demo"  # not recorded while it loads
    assert "(loaded)" not in window.status_model.text() and "holiday-photos loading" in window.status_model.text()
    assert not window.run_edit() and "still loading" in window.message.text.text()

    fake_engine.preload_gate.set()
    qtbot.waitUntil(lambda: len(fake_engine.preloads) == 3 and window.session.model_state == "loaded", timeout=5000)
    assert fake_engine.preloads[-1][0] == "demo"  # the model in use is loaded again
    assert settings.get("model") == "demo" and window.status_model.text() == "Model: demo (loaded)"
    said = window.message.text.text()
    assert said.startswith("holiday-photos was not loaded, so demo is still the model:") and str(folder) in said
    reopened = AppSettings(QSettings(settings.store.fileName(), QSettings.Format.IniFormat))
    assert reopened.get("model") == "demo"  # nor written to the settings file
    assert type(run_and_wait(qtbot, window)).__name__ == "Done"
    assert fake_engine.requests[-1].model == "demo"


def test_a_download_that_fails_is_not_kept(qtbot, window, fake_engine, settings, monkeypatch):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    fake_engine.missing_models.add("someone/sd15")
    dialog = window.open_models()
    dialog.hub_id.setText("someone/sd15")
    assert dialog.download_model()
    qtbot.waitUntil(lambda: len(fake_engine.preloads) == 3 and window.session.model_state == "loaded", timeout=5000)
    assert [spec for spec, *_ in fake_engine.preloads] == ["demo", "someone/sd15", "demo"]  # tried, then back
    assert settings.get("model") == "demo"
    assert dialog.note.text().startswith("sd15 was not loaded, so demo is still the model")
    dialog.close()


def test_a_model_that_loads_is_recorded_only_then(qtbot, window, fake_engine, settings, tmp_path):
    qtbot.waitUntil(lambda: window.session.model_state == "loaded", timeout=5000)
    fake_engine.preload_gate = threading.Event()
    window.choose_model({"model": str(tmp_path / "sd15"), "device": "cpu"})
    qtbot.waitUntil(lambda: window.session.model_state == "loading…", timeout=5000)
    assert (settings.get("model"), settings.get("device")) == ("demo", "auto")
    fake_engine.preload_gate.set()
    qtbot.waitUntil(lambda: window.model_choice.pending is None, timeout=5000)
    assert (settings.get("model"), settings.get("device")) == (str(tmp_path / "sd15"), "cpu")
    assert window.status_model.text() == "Model: sd15 (loaded)"


def test_the_settings_dialog_leaves_the_model_to_be_tried(qtbot, settings):
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.model.setText("/models/not-a-model")
    dialog.device.setCurrentText("cpu")
    dialog.accept()
    assert settings.get("model") == "demo" and settings.get("device") == "auto"
    assert dialog.load_values() == {"model": "/models/not-a-model", "device": "cpu", "precision": "auto"}
