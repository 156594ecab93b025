"""`main.py open PATH --source TEXT --target TEXT`: the prompts fill what the opened project has not got,
whether the engine is ready yet or not, and never replace the project's own."""

from __future__ import annotations

import pytest

from gui.app import open_with_prompts, parse_open
from gui.window import MainWindow
from tests.gui.conftest import SOURCE, TARGET


def test_the_command_line_is_a_path_and_two_optional_prompts(tmp_path):
    args = parse_open([str(tmp_path / "house.png"), "--source", SOURCE, "--target", TARGET])
    assert (args.path, args.source, args.target) == (tmp_path / "house.png", SOURCE, TARGET)
    assert parse_open([]).path is None
    with pytest.raises(SystemExit):
        parse_open(["a.png", "--sauce", "x"])


def test_prompts_fill_a_new_project_once_the_engine_is_ready(qtbot, settings, fake_engine, photo):
    window = MainWindow(settings, engine_factory=lambda: fake_engine)
    window.show()
    try:
        assert not window.engine.is_ready  # the photo waits for the engine: so must the prompts
        open_with_prompts(window, photo, SOURCE, TARGET)
        assert window.doc.project_path is None
        qtbot.waitUntil(lambda: window.doc.project_path is not None, timeout=60_000)
        assert (window.doc.source_prompt, window.doc.target_prompt) == (SOURCE, TARGET)
        assert (window.prompts.source.text(), window.prompts.target.text()) == (SOURCE, TARGET)
        assert not window.isWindowModified()  # they stand in for empty prompts: nothing to save or undo
    finally:
        window.doc.undo.setClean()
        window.close()


def test_a_project_keeps_its_own_prompts(qtbot, window, photo):
    open_with_prompts(window, photo, "a house", "")
    assert window.doc.source_prompt == "a house" and window.doc.target_prompt == ""
    window.save()
    open_with_prompts(window, photo, SOURCE, TARGET)  # the same photo: its project, which has a source prompt
    assert (window.doc.source_prompt, window.doc.target_prompt) == ("a house", TARGET)


def test_a_path_that_does_not_open_gets_no_prompts(qtbot, window, tmp_path):
    open_with_prompts(window, tmp_path / "missing.png", SOURCE, TARGET)
    assert window.doc.project_path is None and window.doc.source_prompt == ""

