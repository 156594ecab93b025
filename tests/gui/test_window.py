"""The window driven like a user, against the FakeEngine: open, paint, segment, choose words, run,
cancel, compare, save, reopen, re-edit without re-inversion."""

from __future__ import annotations

import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QKeySequence

from gui.canvas import Tool
from gui.window import MainWindow
from pipeline.events import Done
from tests.gui.conftest import SOURCE, TARGET, make_window


def view_point(window: MainWindow, x: float, y: float) -> QPoint:
    """Where image pixel (x, y) is on the canvas viewport."""
    return window.canvas.mapFromScene(x, y)


def click_chip(qtbot, chips, word: str) -> None:
    item = chips.item(chips.words().index(word))
    qtbot.mouseClick(chips.viewport(), Qt.MouseButton.LeftButton, pos=chips.visualItemRect(item).center())


def open_photo(qtbot, window: MainWindow, photo) -> None:
    assert window.open_path(photo)
    assert window.doc.image is not None
    assert window.doc.project_path == photo.with_name("house.retake")


def type_prompts(qtbot, window: MainWindow, source: str = SOURCE, target: str = TARGET) -> None:
    for edit, text in ((window.prompts.source, source), (window.prompts.target, target)):
        edit.clear()
        qtbot.keyClicks(edit, text)


def run_and_wait(qtbot, window: MainWindow, timeout: int = 20_000):
    with qtbot.waitSignal(window.session.runFinished, timeout=timeout) as blocker:
        assert window.run_edit()
    return blocker.args[0]


def test_opens_a_photo_into_a_new_project(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    assert (photo.with_name("house.retake") / "project.json").is_file()
    assert "house.retake" in window.windowTitle()
    assert not window.isWindowModified()
    assert window.method.isEnabled() and window.method.editors  # the form came from the specs


def test_paint_a_stroke_then_undo_and_redo_it(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    canvas = window.canvas
    window.set_tool(Tool.BRUSH)
    canvas.set_brush_size(40)
    qtbot.mousePress(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 100, 100))
    qtbot.mouseMove(canvas.viewport(), view_point(window, 300, 200))
    qtbot.mouseRelease(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 300, 200))
    mask = window.doc.masks["edit_mask"]
    assert mask[100, 100] == 255 and mask[150, 200] == 255 and mask[400, 600] == 0
    assert window.doc.undo.count() == 1 and window.isWindowModified()
    window.actions["undo"].trigger()
    assert not window.doc.masks["edit_mask"].any()
    window.actions["redo"].trigger()
    assert window.doc.masks["edit_mask"][150, 200] == 255


def test_brush_keys_eraser_and_mask_actions(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    size = window.canvas.brush_size
    window.actions["brush_bigger"].trigger()
    assert window.canvas.brush_size > size
    window.actions["mask_fill"].trigger()
    assert window.doc.masks["edit_mask"].all()
    window.set_tool(Tool.ERASER)
    qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 320, 240))
    assert window.doc.masks["edit_mask"][240, 320] == 0
    window.actions["mask_invert"].trigger()
    assert window.doc.masks["edit_mask"][240, 320] == 255 and window.doc.masks["edit_mask"][10, 10] == 0
    window.actions["mask_clear"].trigger()
    assert not window.doc.masks["edit_mask"].any()
    for _ in range(3):
        window.actions["undo"].trigger()
    assert window.doc.masks["edit_mask"].all()  # back before the eraser
    window.actions["undo"].trigger()
    assert not window.doc.masks["edit_mask"].any()


def test_segment_with_clicks_and_a_box(qtbot, window, photo, stub_segmenter):
    open_photo(qtbot, window, photo)
    window.set_tool(Tool.SEGMENT)
    viewport = window.canvas.viewport()
    with qtbot.waitSignal(window.doc.maskChanged, timeout=5000):
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 200, 200))
    assert window.doc.masks["edit_mask"][200, 200] == 255
    with qtbot.waitSignal(window.doc.maskChanged, timeout=5000):
        qtbot.mouseClick(viewport, Qt.MouseButton.RightButton, pos=view_point(window, 210, 200))
    assert window.doc.masks["edit_mask"][200, 210] == 0
    assert stub_segmenter.calls[-1][1] == [1, 0]
    with qtbot.waitSignal(window.doc.maskChanged, timeout=5000):
        qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 400, 300))
        qtbot.mouseMove(viewport, view_point(window, 500, 400))
        qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 500, 400))
    assert window.doc.masks["edit_mask"][350, 450] == 255
    assert stub_segmenter.images_set == 1  # the embedding is made once per image
    window.actions["undo"].trigger()
    assert window.doc.masks["edit_mask"][350, 450] == 0


def test_segment_without_a_checkpoint_explains_and_painting_still_works(qtbot, settings, fake_engine, photo):
    window = make_window(qtbot, settings, lambda: fake_engine)  # the real SAM loader, no checkpoint set
    try:
        open_photo(qtbot, window, photo)
        window.set_tool(Tool.SEGMENT)
        qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 200, 200))
        qtbot.waitUntil(window.message.isVisible, timeout=5000)
        assert "checkpoint" in window.message.text.text()
        assert "sam_vit_b" in window.message.text.text()
        window.actions["mask_fill"].trigger()
        assert window.doc.masks["edit_mask"].all()
    finally:
        window.doc.undo.setClean()
        window.close()


def test_chips_choose_words_for_local_blend_and_reweight(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    target, source = window.prompts.chips["target"], window.prompts.chips["source"]
    assert target.words()[:2] == ["a", "castle"]
    window.prompts.role.setCurrentIndex(window.prompts.role.findText("blend words"))
    click_chip(qtbot, target, "castle")
    click_chip(qtbot, source, "house")
    assert window.doc.params["blend_words"] == ["castle", "house"]
    assert target.chosen() == ["castle"] and source.chosen() == ["house"]
    assert window.method.editors["blend_words"].line.text() == "castle, house"
    window.prompts.role.setCurrentIndex(window.prompts.role.findText("reweight"))
    window.prompts.factor.setValue(2.5)
    assert target.chosen() == []  # the chips show the chosen parameter's words
    click_chip(qtbot, target, "castle")
    assert window.doc.params["reweight"] == {"castle": 2.5}
    window.actions["undo"].trigger()
    assert window.doc.params["reweight"] == {}


def test_prompt_warnings_while_typing(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    window.doc.set_method("p2p", {"mode": "replace"})
    type_prompts(qtbot, window, SOURCE, "a big castle in a meadow under a blue sky")
    qtbot.waitUntil(lambda: window.prompts.warning.isVisibleTo(window.prompts), timeout=3000)
    assert "word" in window.prompts.warning.text().lower()
    type_prompts(qtbot, window, SOURCE, " ".join(["castle"] * 80))
    qtbot.waitUntil(lambda: "77 tokens" in window.prompts.warning.text(), timeout=3000)


def test_parameter_form_undo_reset_and_presets(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    guidance = window.method.editors["guidance"]
    guidance.spin.setValue(9.0)
    assert window.doc.params["guidance"] == 9.0
    mode = window.method.editors["mode"]
    mode.combo.setCurrentText("refine")
    assert window.doc.params["mode"] == "refine"
    window.method.save_preset("strong")
    window.method.reset()
    assert window.doc.params["guidance"] == 7.5 and window.doc.params["mode"] == "auto"
    window.method.presets.setCurrentIndex(window.method.presets.findData("strong"))
    window.method._apply_preset()
    assert window.doc.params["guidance"] == 9.0
    window.actions["undo"].trigger()  # the preset
    window.actions["undo"].trigger()  # the reset
    assert window.doc.params["mode"] == "refine"
    assert guidance.spin.value() == 9.0


def test_timeline_bands_drag_step_ranges(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    timeline = window.timeline
    names = [s.name for s in timeline.specs]
    assert {"cross_replace", "self_replace", "blend_start"} <= set(names)
    timeline.resize(800, timeline.sizeHint().height())
    lane = names.index("cross_replace")
    y = int(timeline._lanes_top() + lane * 16 + 8)
    end_x = int(timeline.x_of(0.8))
    qtbot.mousePress(timeline, Qt.MouseButton.LeftButton, pos=QPoint(end_x, y))
    qtbot.mouseMove(timeline, QPoint(int(timeline.x_of(0.5)), y))
    qtbot.mouseRelease(timeline, Qt.MouseButton.LeftButton, pos=QPoint(int(timeline.x_of(0.5)), y))
    start, end = window.doc.params["cross_replace"]
    assert start == 0.0 and abs(end - 0.5) < 0.01
    assert abs(window.method.editors["cross_replace"].end.value() - 0.5) < 0.01
    window.actions["undo"].trigger()
    assert window.doc.params["cross_replace"] == [0.0, 0.8]


def test_run_shows_progress_previews_and_result_then_compare(qtbot, window, photo, fake_engine):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    progress = []
    window.engine.event.connect(lambda e: progress.append(e))
    final = run_and_wait(qtbot, window)
    assert isinstance(final, Done) and not final.reused_inversion
    stages = [e.stage for e in progress if type(e).__name__ == "Progress"]
    assert "DDIM inversion" in stages and "editing" in stages
    assert window.session.run.previews["editing"]  # the timeline holds the step previews
    assert len(window.session.results) == 1 and window.session.current_result == 0
    assert window.history.list.count() == 1
    assert "done" in window.status_stage.text()
    assert window.canvas.result_item.pixmap().width() == 640  # the result covers the photo
    window.actions["compare"].trigger()
    assert window.canvas.split == 0.0 and window.canvas.result_item.pixmap().isNull()
    window.tools.compare.setValue(50)
    assert window.canvas.result_item.pixmap().width() == 320
    # scrubbing the timeline shows a step on the canvas
    timeline = window.timeline
    timeline.resize(800, timeline.sizeHint().height())
    row = timeline.stages().index("editing")
    qtbot.mouseClick(timeline, Qt.MouseButton.LeftButton, pos=QPoint(int(timeline.x_of(0.3)), 4 + row * 44 + 20))
    assert window.canvas.override is not None and timeline.chosen[0] == "editing"


def test_cancel_then_run_again(qtbot, window, photo, fake_engine):
    fake_engine.steps, fake_engine.delay = 40, 0.05
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    with qtbot.waitSignal(window.session.runFinished, timeout=20_000) as blocker:
        assert window.run_edit()
        qtbot.waitUntil(lambda: window.session.run.step >= 2, timeout=10_000)
        assert window.actions["cancel"].isEnabled() and not window.actions["run"].isEnabled()
        window.actions["cancel"].trigger()
    assert type(blocker.args[0]).__name__ == "CancelledEvent"
    assert "Cancelled" in window.status_stage.text()
    assert window.session.results == [] and window.session.inversions == 0  # nothing half-made was written
    fake_engine.steps, fake_engine.delay = 4, 0.0
    assert isinstance(run_and_wait(qtbot, window), Done)
    assert len(window.session.results) == 1


def test_a_failure_is_shown_and_the_app_keeps_working(qtbot, window, photo, fake_engine):
    fake_engine.fail = "The GPU ran out of memory; nothing was written."
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    run_and_wait(qtbot, window)
    assert window.message.isVisible() and "out of memory" in window.message.text.text()
    assert window.message.details
    fake_engine.fail = None
    assert isinstance(run_and_wait(qtbot, window), Done)
    assert not window.message.isVisible()


def test_save_reopen_and_re_edit_without_re_inversion(qtbot, qapp, settings, fake_engine, stub_segmenter, photo,
                                                      tmp_path):
    window = make_window(qtbot, settings, lambda: fake_engine, lambda: stub_segmenter)
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    window.actions["mask_fill"].trigger()
    window.method.editors["self_replace"].end.setValue(0.5)
    assert isinstance(run_and_wait(qtbot, window), Done)
    assert window.isWindowModified()
    assert window.save() and not window.isWindowModified()
    project = window.doc.project_path
    window.close()
    assert fake_engine.inversions_made == 1
    assert settings.recent()[0] == str(project)

    again = make_window(qtbot, settings, lambda: fake_engine, lambda: stub_segmenter)
    try:
        assert again.open_path(project)
        assert again.doc.source_prompt == SOURCE and again.doc.target_prompt == TARGET
        assert again.prompts.source.text() == SOURCE
        assert again.doc.params["self_replace"] == [0.0, 0.5]
        assert again.doc.masks["edit_mask"].all()
        assert len(again.session.results) == 1 and again.history.list.count() == 1
        assert again.status_inversion.text() == "Inversion: 1 stored"
        type_prompts(qtbot, again, SOURCE, "a tower in a meadow under a blue sky")
        final = run_and_wait(qtbot, again)
        assert isinstance(final, Done) and final.reused_inversion
        assert fake_engine.inversions_made == 1
        assert "edit_mask" in fake_engine.requests[-1].inputs
        assert len(again.session.results) == 2
        # restore the first edit's settings from the history
        again.history.list.setCurrentRow(0)
        again.history.restore.click()
        assert again.doc.target_prompt == TARGET and again.prompts.target.text() == TARGET
    finally:
        again.doc.undo.setClean()
        again.close()


def test_export_png_jpeg_webp_and_open_png_restores_settings(qtbot, window, photo, tmp_path):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    window.method.editors["guidance"].spin.setValue(6.0)
    run_and_wait(qtbot, window)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("castle.png", "castle.jpg", "castle.webp"):
        assert window.export(out / name)
        with Image.open(out / name) as image:
            assert image.size == (640, 480)
            if name.endswith(".png"):
                assert TARGET in image.text["retake"]
            else:
                assert TARGET in image.getexif()[0x010E]  # the parameters travel in every format
    window.doc.set_prompt("target", "something else")
    window.method.editors["guidance"].spin.setValue(7.5)
    assert window.open_path(out / "castle.png")
    assert window.doc.target_prompt == TARGET and window.doc.params["guidance"] == 6.0


def test_unsaved_changes_ask_before_closing(qtbot, window, photo, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    open_photo(qtbot, window, photo)
    window.doc.set_prompt("target", "a castle")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.Cancel)
    assert not window.close()
    assert asked and window.isVisible()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Save)
    assert window.close()
    from pipeline.project import Project
    assert Project.open(window.doc.project_path).settings.params  # saved on the way out


def test_layout_is_remembered(qtbot, settings, fake_engine):
    first = make_window(qtbot, settings, lambda: fake_engine)
    first.docks["history"].hide()
    first.close()
    second = make_window(qtbot, settings, lambda: fake_engine)
    try:
        assert not second.docks["history"].isVisible()
    finally:
        second.close()


def test_every_menu_action_has_its_own_shortcut_listed_in_help(qtbot, window, photo):
    menu_actions = [action for menu in window.menuBar().actions() for action in menu.menu().actions()
                    if not action.isSeparator() and action.menu() is None]
    assert not [a.text() for a in menu_actions if a.shortcut().isEmpty() and a is not window.actions["about"]]
    keys = [key.toString() for a in menu_actions for key in a.shortcuts()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)  # no key does two things
    table = dict(window.shortcut_table())
    for action in menu_actions:
        if not action.shortcut().isEmpty():
            assert table[action.text().replace("&", "")] == action.shortcut().toString(
                QKeySequence.SequenceFormat.NativeText)
    assert table["Bigger brush"] == "]" and table["Smaller brush"] == "[" and table["Tools panel"] == "Alt+1"
    # and the keys work: brush hardness, panels, the next mask
    open_photo(qtbot, window, photo)
    window.activateWindow()
    hardness = window.canvas.hardness
    qtbot.keyClick(window, Qt.Key.Key_BraceLeft)
    assert window.canvas.hardness == pytest.approx(hardness - 0.1)
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.AltModifier)
    assert not window.docks["tools"].isVisible()
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.AltModifier)
    assert window.docks["tools"].isVisible()
    window.doc.set_method("masactrl")
    qtbot.keyClick(window, Qt.Key.Key_N)
    assert window.tools.purpose.currentData() == "subject_mask" and window.canvas.mask_name == "subject_mask"


def test_reference_panel_follows_the_method_declaration(qtbot, window, photo, monkeypatch):
    open_photo(qtbot, window, photo)
    assert not window.reference.isEnabled()  # p2p declares no reference image
    from pipeline.methods.base import InputSpec
    from pipeline.methods.p2p import P2PParams

    monkeypatch.setattr(P2PParams, "INPUTS", P2PParams.INPUTS + (
        InputSpec("reference", "image", "Reference", "A picture of the object to bring in."),))
    window.reference.set_ready()
    assert window.reference.isEnabled() and "Reference" in window.reference.title.text()
    window.reference.load_file(photo)
    assert window.doc.references["reference"].image.size == (640, 480)
    assert not window.reference.picture.pixmap().isNull()


def test_every_registered_method_gets_its_form_masks_and_bands(qtbot, window, photo):
    """No per-method GUI code: whatever the registry lists is shown from its declarations."""
    from gui.document import reference_masks
    from pipeline.methods.base import input_specs
    from pipeline.methods.registry import get_method, method_ids
    from pipeline.params import param_specs

    open_photo(qtbot, window, photo)
    assert window.method.method.count() == len(method_ids())
    for index, method_id in enumerate(method_ids()):
        window.method.method.setCurrentIndex(index)
        window.method.method.activated.emit(index)
        params_type = get_method(method_id).Params
        specs = param_specs(params_type)
        assert window.doc.method_id == method_id
        assert list(window.method.editors) == [s.name for s in specs]
        masks = [s.name for s in input_specs(params_type) if s.kind == "mask"] or ["edit_mask"]
        purposes = [window.tools.purpose.itemData(i) for i in range(window.tools.purpose.count())]
        assert purposes == masks
        assert [s.name for s in window.timeline.specs] == [
            s.name for s in specs if s.kind in ("step_range", "step_fraction")]
        images = [s.name for s in input_specs(params_type) if s.kind == "image"]
        assert window.reference.isEnabled() == bool(images)
        assert window.doc.mask_pictures == reference_masks(method_id)
        assert set(window.doc.mask_pictures.values()) <= set(images)
        assert window.reference.paint_mask.isVisibleTo(window.reference) == bool(window.doc.mask_pictures)
        photo_masks = [m for m in masks if m not in window.doc.mask_pictures and m != "edit_mask"]
        if photo_masks:  # masks are kept per purpose
            window.tools.choose_purpose(photo_masks[0])
            window.actions["mask_fill"].trigger()
            assert window.doc.masks[photo_masks[0]].all() and not window.doc.has_mask("edit_mask")
            window.actions["undo"].trigger()
    while window.doc.undo.canUndo():
        window.actions["undo"].trigger()
    assert window.doc.method_id == "p2p"
