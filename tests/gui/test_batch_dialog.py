"""File > Save recipe and Project > Apply to a folder: the open project's edit as a recipe, and the batch
run from the window through `retake batch` itself, in the background."""

from __future__ import annotations

import json

import pytest

from gui import batch_dialog
from pipeline.batch.recipe import read_recipe
from tests.batch_photos import make_photos
from tests.gui.conftest import SOURCE, TARGET


def _edit_in_window(window, photo) -> None:
    window.settings.set("model", "demo-tiny")
    window.settings.set("max_side", 64)
    assert window.open_path(photo)
    window.doc.set_prompt("source", SOURCE)
    window.doc.set_prompt("target", TARGET)
    window.doc.set_param("inversion", "direct")
    window.doc.set_param("steps", 5)


def test_save_recipe_writes_the_window_s_edit_as_a_recipe_retake_batch_reads(window, photo, tmp_path):
    _edit_in_window(window, photo)
    window.doc.set_param("cross_replace", [0.0, 0.5])
    path = batch_dialog.save_recipe(window, tmp_path / "house.recipe.json")
    recipe = read_recipe(path)
    assert (recipe.model, recipe.method, recipe.max_side) == ("demo-tiny", "p2p", 64)
    assert recipe.source.text == SOURCE and recipe.target.text == TARGET
    assert recipe.params["inversion"] == "direct" and recipe.params["steps"] == 5
    assert recipe.params["cross_replace"] == [0.0, 0.5]
    assert json.loads(path.read_text())["format"] == "retake-recipe-1"
    assert (recipe.area, recipe.area_padding, recipe.feather) == (None, 32, 4)  # the window's area settings
    window.settings.set("area", "whole")
    window.settings.set("feather", 12)
    recipe = read_recipe(batch_dialog.save_recipe(window, tmp_path / "whole.recipe.json"))
    assert (recipe.area, recipe.area_padding, recipe.feather) == ("whole", 32, 12)
    assert window.actions["save_recipe"].shortcut().toString() == "Ctrl+Shift+B"


def test_a_recipe_the_batch_would_refuse_is_refused_in_the_window(window, photo, tmp_path):
    _edit_in_window(window, photo)
    window.doc.params["steps"] = 0  # as a damaged preset could leave it
    assert batch_dialog.save_recipe(window, tmp_path / "bad.json") is None
    assert "Parameter steps must lie between" in window.message.text.text()
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.slow
def test_apply_to_a_folder_runs_the_batch_in_the_background_and_shows_its_report(qtbot, window, photo, tmp_path):
    pytest.importorskip("ray", reason="the batch extra (ray) is not installed")
    _edit_in_window(window, photo)
    photos = make_photos(tmp_path / "catalogue", 2, broken=True)
    dialog = batch_dialog.apply_to_folder(window)
    dialog.inputs.setText(str(tmp_path / "catalogue"))
    dialog.out.setText(str(tmp_path / "out"))
    dialog.target.setText("a castle of {stem} in a meadow under a blue sky")  # a template, per photo
    dialog.workers.setValue(1)
    assert dialog.start()
    assert not dialog.run_button.isEnabled() and dialog.stop_button.isEnabled()
    assert window.isEnabled()  # the window stays free while the batch runs
    qtbot.waitUntil(lambda: dialog.exit_code is not None, timeout=300_000)
    assert dialog.exit_code == 1, dialog._errors  # the broken photo failed, the others are done
    assert dialog.progress.value() == dialog.progress.maximum() == 3
    assert dialog.failures.count() == 1 and dialog.failures.item(0).text().startswith("broken: Cannot open")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    done = {row["name"]: row for row in report["photos"] if row["status"] == "done"}
    assert set(done) == {p.stem for p in photos}
    assert done[photos[0].stem]["target"] == f"a castle of {photos[0].stem} in a meadow under a blue sky"
    assert dialog.sheet_button.isEnabled() and dialog.run_button.isEnabled()
