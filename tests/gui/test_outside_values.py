"""Nothing from outside reaches the document unchecked: a result PNG's metadata, a project.json of
another Retake, an edit of the history, the settings file and presets go through the check the command
line gives --param. What is known and valid is restored, the rest is named in one message; a refused
value changes nothing, the undo stack stays usable, and no wrong-typed value ever reaches project.json."""

from __future__ import annotations

import json
import math

from PIL import Image, PngImagePlugin

from gui.project_io import read_history
from pipeline.params import check_params
from pipeline.project import ModelRecord, Project, app_version
from tests.gui.conftest import make_window
from tests.gui.test_window import open_photo

NAN = float("nan")


def result_png(path, metadata) -> str:
    """A result PNG whose Retake metadata is `metadata` (a dict, dumped as Python's json does: NaN
    included), or raw text."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("retake", metadata if isinstance(metadata, str) else json.dumps(metadata))
    Image.new("RGB", (64, 48), "purple").save(path, pnginfo=info)
    return path


def state(window):
    doc = window.doc
    return doc.source_prompt, doc.target_prompt, doc.method_id, json.dumps(doc.params, sort_keys=True)


def stored_params_are_valid(root) -> bool:
    from pipeline.methods.registry import get_method

    settings = Project.open(root).settings
    return check_params(get_method(settings.method).Params, settings.params).ok


def test_a_png_with_nan_restores_everything_else_and_names_it(qtbot, window, photo, tmp_path):
    open_photo(qtbot, window, photo)
    guidance = window.doc.params["guidance"]
    png = result_png(tmp_path / "nan.png", {"app": f"Retake {app_version()}", "method": "p2p",
                                            "source_prompt": "a red house", "target_prompt": "a blue house",
                                            "params": {"guidance": NAN, "steps": 7}})
    assert window.open_path(png)
    doc = window.doc
    assert (doc.source_prompt, doc.target_prompt, doc.params["steps"]) == ("a red house", "a blue house", 7)
    assert doc.params["guidance"] == guidance and not math.isnan(doc.params["guidance"])
    text = window.message.text.text()
    assert window.message.isVisible() and text.startswith("nan.png: parameter guidance must be a finite number")
    assert text.endswith("; the rest was restored.")
    assert window.save() and not window.isWindowModified() and stored_params_are_valid(doc.project_path)
    window.actions["undo"].trigger()  # one step: the whole restore
    assert doc.source_prompt == "" and doc.params["steps"] == 50


def test_an_unknown_method_restores_the_prompts_and_leaves_undo_and_save_working(qtbot, window, photo, tmp_path):
    open_photo(qtbot, window, photo)
    png = result_png(tmp_path / "evil.png", {"app": "Retake 9.0", "method": "evil-method", "source_prompt": "y",
                                             "target_prompt": "x", "params": {"power": 11}})
    before = state(window)
    assert window.open_path(png)
    assert window.message.text.text() == (f"evil.png was made by Retake 9.0: method 'evil-method' is unknown to "
                                          f"this Retake ({app_version()}); prompts restored, parameters skipped.")
    assert state(window)[:2] == ("y", "x") and state(window)[2:] == before[2:]
    assert window.doc.undo.canUndo() and window.save() and not window.doc.dirty  # the stack is not stuck
    window.actions["undo"].trigger()
    assert state(window) == before


def test_wrong_typed_values_never_reach_project_json(qtbot, window, photo, tmp_path):
    open_photo(qtbot, window, photo)
    before = state(window)
    params = {"steps": 10**30, "guidance": "many", "blend_words": 5, "cross_replace": "x", "mode": ["auto"],
              "reweight": {"\ud800": 2}, "early_stop": "maybe"}
    assert not window.open_path(result_png(tmp_path / "poison.png", {"method": "p2p", "params": params}))
    assert state(window) == before and not window.doc.undo.canUndo()  # nothing at all was taken
    assert "nothing was restored" not in window.message.text.text()  # the method was known: "the rest"
    for name in params:
        assert f"parameter {name} " in window.message.text.text() or name == "reweight"
    window.doc.set_prompt("source", "a house")
    assert window.save() and stored_params_are_valid(window.doc.project_path)
    window.doc.undo.setClean()
    assert window.open_path(window.doc.project_path) and not window.message.isVisible()  # it reopens cleanly


def test_settings_that_are_not_settings_change_nothing(qtbot, window, photo, tmp_path):
    open_photo(qtbot, window, photo)
    before = state(window)
    for i, metadata in enumerate(({"method": 5, "params": [], "source_prompt": 7, "target_prompt": None},
                                  {"params": {"steps": 7}},  # no method: nothing to check it against
                                  {"method": "p2p", "params": "steps=7", "source_prompt": "\ud800"})):
        window.message.hide()
        window.open_path(result_png(tmp_path / f"odd{i}.png", metadata))
        assert window.message.isVisible(), metadata
        assert state(window) == before and not window.doc.undo.canUndo(), metadata
    assert window.message.text.text().startswith("odd2.png: its source prompt is not text; its parameters are str")


def test_a_project_written_by_another_retake_opens_with_what_this_one_knows(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    root = window.doc.project_path
    manifest = json.loads((root / "project.json").read_text())
    manifest["settings"].update(method="p2p", source_prompt="a house",
                                params={"steps": 10**30, "guidance": "x", "mode": "nope", "future": 1, "eta": 3,
                                        "self_replace": [0.1, 0.4]})
    (root / "project.json").write_text(json.dumps(manifest))
    assert window.open_path(root)
    text = window.message.text.text()
    assert "Some saved parameters of house.retake could not be used" in text
    assert all(word in text for word in ("unknown parameter eta", "unknown parameter future", "parameter steps",
                                         "parameter guidance", "parameter mode"))
    assert window.doc.params["self_replace"] == [0.1, 0.4] and window.doc.params["steps"] == 50
    window.doc.set_prompt("target", "a castle")
    assert window.save() and stored_params_are_valid(root)

    manifest = json.loads((root / "project.json").read_text())
    manifest["settings"]["method"] = "future-method"
    (root / "project.json").write_text(json.dumps(manifest))
    window.doc.undo.setClean()
    assert window.open_path(root)
    assert window.message.text.text() == ("house.retake was saved with method 'future-method' is unknown to this "
                                          f"Retake ({app_version()}); Prompt-to-Prompt with its defaults is shown instead.")
    assert window.doc.method_id == "p2p" and window.doc.source_prompt == "a house"


def test_restoring_an_edit_of_the_history_checks_it_too(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    root = window.doc.project_path
    Project.open(root).add_edit(target_prompt="a barn", source_prompt="a house", model=ModelRecord("x", "sha256:x"),
                                method="p2p", params={"steps": 10**30, "guidance": 6.5}, seed=None,
                                inversion_key=None, result=Image.new("RGB", (64, 48)))
    window.session.set_history(read_history(root))
    window.history.restore.click()
    assert window.doc.target_prompt == "a barn" and window.doc.params["guidance"] == 6.5
    assert window.doc.params["steps"] == 50 and "edit #e0001: parameter steps must be" in window.message.text.text()


def test_the_document_refuses_what_a_save_could_not_write(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    before = state(window)
    for name, value in (("guidance", NAN), ("reweight", {"castle": math.inf}), ("steps", 10**30),
                        ("blend_words", [1, 2])):
        window.message.hide()
        assert not window.doc.set_param(name, value)
        assert window.message.isVisible() and f"Parameter {name} " in window.message.text.text()
    assert not window.doc.set_method("no-such-method") and "Unknown method" in window.message.text.text()
    editor = window.method.editors["reweight"]  # what a person can type
    editor.line.setText("castle:nan")
    editor.line.editingFinished.emit()
    assert state(window) == before and not window.doc.undo.canUndo()


def test_presets_are_checked_when_applied(qtbot, window, photo, settings):
    open_photo(qtbot, window, photo)
    settings.store.setValue("presets/p2p", json.dumps({"old": {"steps": 7, "guidance": NAN, "future": 1}}))
    method = window.method
    method.rebuild()
    method.presets.setCurrentIndex(method.presets.findData("old"))
    method._apply_preset()
    assert window.doc.params["steps"] == 7 and window.doc.params["guidance"] == 7.5
    assert window.message.text.text() == ("Preset old: unknown parameter future; parameter guidance must be a "
                                          "finite number, not nan; the rest was applied.")


def test_the_settings_file_is_checked_before_it_is_used(qtbot, settings, fake_engine, photo):
    for name, value in (("default_steps", "abc"), ("precision", "float16"), ("autosave_minutes", "-5"),
                        ("device", "7"), ("model", ["a", "b"]), ("area", "sideways"), ("feather", "-3")):
        settings.store.setValue(name, value)
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        text = window.message.text.text()
        assert window.message.isVisible() and text.startswith("Some saved settings could not be used")
        assert all(name in text for name in ("Precision", "Autosave every (minutes)", "Device", "Model", "Area",
                                             "Edge feather"))
        assert "Precision 'float16' is not one of auto, fp16, bf16, fp32." in text and "_" not in text
        assert "Edge feather '-3' is not between 0 and 512." in text
        assert settings.request_options() == {"model": "demo", "device": None, "dtype": None, "max_side": None,
                                              "area": None, "area_padding": 32, "feather": 4, "fast": True}
        open_photo(qtbot, window, photo)  # a new project: the default steps are read
        assert window.doc.params["steps"] == 50
        assert "Default steps 'abc' is not a whole number." in window.message.text.text()

        settings.store.setValue("default_steps", "1")  # a whole number, but not a number of steps
        window.doc.undo.setClean()
        other = photo.with_name("other.png")
        Image.new("RGB", (64, 48), "olive").save(other)
        assert window.open_path(other)
        assert window.doc.params["steps"] == 50 and "parameter steps must lie between 5 and 200, not 1" in \
            window.message.text.text()
    finally:
        window.doc.undo.setClean()
        window.close()
