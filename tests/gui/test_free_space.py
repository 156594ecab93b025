"""Project > Free disk space: the window asks what to drop, says what it freed, and refreshes the count."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from PySide6.QtWidgets import QMessageBox

from tests.gui.test_window import open_photo

MB = 250_000  # floats: 1 MB a record


@pytest.fixture
def stored(qtbot, window, photo):
    """The window's project with an inversion I the newest edit used, its tuning t2, an older tuning t1
    of it, and another inversion J."""
    from pipeline.project import ModelRecord, Project

    open_photo(qtbot, window, photo)
    project = Project.open(window.doc.project_path)
    for key, parent in (("I", None), ("J", None), ("t1", "I"), ("t2", "I")):
        project.save_inversion(key, {"t": torch.zeros(MB)}, method="toli", model_identity="sha256:x",
                               source_prompt="a house", params={}, size=(64, 64), steps=5, tuning_of=parent)
    project.add_edit(target_prompt="a castle", source_prompt="a house", model=ModelRecord("demo", "sha256:x"),
                     method="toli", params={}, seed=None, inversion_key="I", tuning_key="t2",
                     result=Image.new("RGB", (8, 8)))
    return project


def _keys(window):
    from pipeline.project import Project

    return [record.key for record in Project.open(window.doc.project_path).inversions]


def test_the_project_menu_frees_what_the_artist_chooses(qtbot, window, stored, monkeypatch):
    menus = {action.text(): action.menu() for action in window.menuBar().actions()}
    assert window.actions["free_space"] in menus["&Project"].actions()
    asked = []
    monkeypatch.setattr(window, "_ask_free_space", lambda *sizes: asked.append(sizes))  # cancelled
    assert not window.free_disk_space() and _keys(window) == ["J", "t1", "I", "t2"]
    tunings, everything = asked[0]
    assert 1e6 < tunings < 1.01e6 and 2e6 < everything < 2.02e6
    monkeypatch.setattr(window, "_ask_free_space", lambda *sizes: False)
    assert window.free_disk_space() and _keys(window) == ["J", "I", "t2"]
    assert window.status_stage.text() == "Dropped 1 tuning record: freed 1.0 MB."
    monkeypatch.setattr(window, "_ask_free_space", lambda *sizes: True)
    assert window.free_disk_space() and _keys(window) == ["I", "t2"] and window.session.inversions == 2
    assert window.status_stage.text() == "Dropped 1 inversion: freed 1.0 MB."
    assert not window.free_disk_space() and window.status_stage.text().startswith("Nothing to free")


@pytest.mark.parametrize("button, expected", [("Free", False), ("Also", True), ("Cancel", None)])
def test_the_question_offers_both_sizes(qtbot, window, monkeypatch, button, expected):
    def click(box):
        texts = [b.text() for b in box.buttons()]
        assert "Free 1.0 MB" in texts and "Also inversions: 2.5 MB" in texts, texts
        next(b for b in box.buttons() if b.text().replace("&", "").startswith(button)).click()

    monkeypatch.setattr(QMessageBox, "exec", click)
    assert window._ask_free_space(1_000_000, 2_500_000) is expected
