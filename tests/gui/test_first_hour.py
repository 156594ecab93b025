"""What a new user hit in the window (issue 21): the wheel over value fields (item 2), zoom about the
cursor, re-fitting and the zoom shown (4), the layout at 1400x900 and 1280x800 (6), word chips that say
their role (8), the edge feather and the area choice beside the mask tools with the crop outlined on the
canvas (10, and sharp edits on large photos), and previews of any shape laid on the photo or its crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget

from gui.window import MainWindow
from tests.gui.test_window import click_chip, open_photo, type_prompts, view_point


def wheel(widget: QWidget, at: QPoint, notches: int) -> None:
    """Turn the mouse wheel `notches` (positive: away from the user) over `widget` at `at`."""
    event = QWheelEvent(QPointF(at), QPointF(widget.mapToGlobal(at)), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def set_run(window: MainWindow, **changes) -> None:
    """Change the session's run state as a run would, and say so."""
    for name, value in changes.items():
        setattr(window.session.run, name, value)
    window.session.runChanged.emit()


def settle(qtbot, window: MainWindow, size: tuple[int, int]) -> None:
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size, timeout=3000)
    qtbot.wait(50)


# --------------------------------------------------------------------------------------------------
# Item 2: the wheel changes a field only when it has focus; otherwise the Method panel scrolls


def test_the_wheel_over_an_unfocused_field_scrolls_the_method_panel_and_leaves_the_value(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    settle(qtbot, window, (1280, 800))
    window.docks["method"].raise_()
    spin = window.method.editors["inner_steps"].spin
    bar = window.docks["method"].widget().verticalScrollBar()
    assert bar.maximum() > 0  # the form is taller than its panel at 1280x800
    bar.setValue(0)
    before = spin.value()
    wheel(spin, spin.rect().center(), -1)
    assert spin.value() == before and window.doc.params["inner_steps"] == before  # no new inversion by accident
    assert bar.value() > 0  # the panel scrolled instead
    slider = window.method.editors["guidance"].slider
    position = slider.value()
    wheel(slider, slider.rect().center(), 2)
    assert slider.value() == position
    window.activateWindow()
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=2000)
    wheel(spin, spin.rect().center(), 1)
    assert spin.value() == before + 1  # a field the artist chose takes the wheel


# --------------------------------------------------------------------------------------------------
# Item 4: zoom about the cursor, re-fit when the docks change the canvas's size, the zoom shown


def test_wheel_zoom_keeps_the_photo_point_under_the_cursor(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    canvas = window.canvas
    viewport = canvas.viewport()
    for at in (QPoint(viewport.width() * 3 // 4, viewport.height() // 4), QPoint(40, viewport.height() - 30)):
        canvas.fit()
        for notches in (1, 1, 2, -1, 3, -2):
            under = canvas.mapToScene(at)
            wheel(viewport, at, notches)
            now = canvas.mapToScene(at)
            tolerance = 1.0 / canvas.zoom() + 0.5  # a viewport pixel, in photo pixels
            assert abs(now.x() - under.x()) <= tolerance and abs(now.y() - under.y()) <= tolerance, (notches, under, now)


def test_the_canvas_re_fits_when_docks_resize_until_the_artist_zooms_and_shows_the_zoom(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    settle(qtbot, window, (1400, 900))
    canvas = window.canvas
    canvas.fit()
    fitted = canvas.zoom()
    for name in ("tools", "history", "timeline"):  # the canvas gets wider and taller than the photo needs
        window.docks[name].hide()
    qtbot.waitUntil(lambda: canvas.zoom() > fitted * 1.05, timeout=3000)
    shown = canvas.mapFromScene(canvas.source_item.sceneBoundingRect()).boundingRect()
    view = canvas.viewport().rect()
    assert view.adjusted(-2, -2, 2, 2).contains(shown)  # the whole photo shows
    assert shown.width() >= view.width() - 4 or shown.height() >= view.height() - 4  # and fills one side
    assert canvas.zoom_label.isVisible() and canvas.zoom_label.text() == f"{round(canvas.zoom() * 100)}%"
    wheel(canvas.viewport(), canvas.viewport().rect().center(), 2)  # the artist zooms: the view stays so
    zoomed = canvas.zoom()
    window.docks["tools"].show()
    qtbot.wait(100)
    assert canvas.zoom() == zoomed and canvas.zoom_label.text() == f"{round(zoomed * 100)}%"


def test_a_preview_of_another_shape_than_the_photo_lies_over_the_whole_photo(qtbot, window, photo):
    open_photo(qtbot, window, photo)  # 640x480; the demo model's previews are of its 128x64 working picture
    window.canvas.show_step(Image.new("RGB", (160, 80), (200, 30, 30)))
    rect = window.canvas.result_item.sceneBoundingRect()
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == (0, 0, 640, 480)


# --------------------------------------------------------------------------------------------------
# Item 6: the layout at 1400x900 and 1280x800


def _overlaps(widgets: list[QWidget]) -> list[tuple[str, str]]:
    boxes = [(type(w).__name__, QRect(w.mapTo(w.window(), QPoint(0, 0)), w.size())) for w in widgets]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.intersects(other)]


@pytest.mark.parametrize("size", [(1400, 900), (1280, 800)])
def test_the_tools_rows_keep_their_height_with_a_note_and_a_tall_timeline(qtbot, window, photo, size):
    open_photo(qtbot, window, photo)
    window.doc.set_method("specref")
    set_run(window, totals={"DDIM inversion": 50, "reference inversion": 50, "editing": 50})
    # The segment tool's note no longer lies in Tools (gui/segment_help.py: the message bar says it).
    settle(qtbot, window, size)
    rows = [window.tools.size, window.tools.size_label, window.tools.hardness, window.tools.purpose]
    for widget in rows:
        assert widget.height() >= widget.minimumSizeHint().height(), (type(widget).__name__, widget.height())
    assert not _overlaps(rows)


@pytest.mark.parametrize("method,totals", [
    ("specref", {"DDIM inversion": 50, "reference inversion": 50, "editing": 50}),
    ("stylediffusion", {"DDIM inversion": 30, "training the mapping networks": 30, "editing": 30}),
])
def test_a_tall_timeline_never_makes_the_window_taller_than_a_1280x800_screen(qtbot, window, photo, method, totals):
    from gui.timeline import PAD, ROW_H

    open_photo(qtbot, window, photo)
    window.doc.set_method(method)
    set_run(window, totals=totals)
    settle(qtbot, window, (1280, 760))
    window.message.show_message("A message re-runs the window's layout, which enforces its minimum.", "")
    qtbot.wait(100)
    assert window.minimumSizeHint().height() <= 700 and window.height() == 760
    timeline = window.timeline  # it scrolls in its dock instead, every band still whole inside
    assert timeline._lanes_top() + len(timeline.specs) * 16 <= timeline.height()
    viewport = window.docks["timeline"].widget().viewport()
    settle(qtbot, window, (1280, 800))  # the docks on the right leave room for two rows; the rest scrolls
    assert viewport.height() >= 2 * ROW_H + 2 * PAD, viewport.height()
    settle(qtbot, window, (1400, 900))  # where the screen allows, every row and band shows unscrolled
    assert viewport.height() >= timeline.minimumHeight(), (viewport.height(), timeline.minimumHeight())


@pytest.mark.parametrize("size", [(1400, 900), (1280, 800)])
def test_the_timeline_hint_labels_and_bands_do_not_overlap(qtbot, window, photo, size):
    from gui.timeline import PAD, ROW_H

    open_photo(qtbot, window, photo)
    settle(qtbot, window, size)
    timeline = window.timeline
    assert timeline.specs and not timeline.stages()
    assert timeline._lanes_top() >= PAD + ROW_H  # the hint's row comes first, the bands under it
    window.doc.set_method("stylediffusion")  # five step parameters
    set_run(window, totals={"DDIM inversion": 30, "training the mapping networks": 30, "editing": 30})
    qtbot.wait(100)
    assert timeline._lanes_top() + len(timeline.specs) * 16 <= timeline.height()  # every band shows whole
    left, _ = timeline._strip()
    widest = max(timeline.fontMetrics().horizontalAdvance(text) for text in timeline.stages())
    assert widest <= left - 2 * PAD  # no stage name is cut


@pytest.mark.parametrize("size", [(1400, 900), (1280, 800)])
def test_the_chip_boxes_show_whole_rows(qtbot, window, photo, size):
    open_photo(qtbot, window, photo)
    settle(qtbot, window, size)
    long = "a big red striped house on the left and a small green tree on the right in a meadow under a blue sky"
    type_prompts(qtbot, window, long, long.replace("house", "castle"))
    qtbot.wait(50)
    for chips in window.prompts.chips.values():
        view = chips.viewport().rect()
        rects = [chips.visualItemRect(chips.item(i)) for i in range(chips.count())]
        shown = [rect for rect in rects if rect.intersects(view)]
        assert all(view.contains(rect) for rect in shown)  # no chip is cut: whole rows
        assert len({rect.top() for rect in shown}) == min(len({rect.top() for rect in rects}), 3)


# --------------------------------------------------------------------------------------------------
# Item 8: chips say their role: a colour per word parameter, a legend, and what a click does


def test_chips_are_filled_with_their_parameters_colour_named_in_a_legend(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    prompts = window.prompts
    target = prompts.chips["target"]
    prompts.role.setCurrentIndex(prompts.role.findText("blend words"))
    assert "blend words" in prompts.purpose.text() and prompts.purpose.isVisibleTo(prompts)
    click_chip(qtbot, target, "castle")
    prompts.role.setCurrentIndex(prompts.role.findText("reweight"))
    assert "reweight" in prompts.purpose.text()
    click_chip(qtbot, target, "meadow")
    colours = {label: colour.name() for _, label, colour, _ in prompts.roles()}
    assert len(set(colours.values())) == len(colours)  # one colour per word parameter
    item = {word: target.item(i) for i, word in enumerate(target.words())}
    assert item["castle"].background().color().name() == colours["blend words"]
    assert item["meadow"].background().color().name() == colours["reweight"]
    assert item["sky"].background().style() == Qt.BrushStyle.NoBrush
    picture = target.viewport().grab().toImage()  # and it is what the chip looks like on screen
    for word, label in (("castle", "blend words"), ("meadow", "reweight")):
        rect = target.visualItemRect(item[word])
        seen = picture.pixelColor(rect.left() + 3, rect.center().y())  # inside the chip, left of its word
        assert seen.name() == colours[label], (word, seen.name(), colours[label])
    legend = prompts.legend.text()
    assert all(label in legend and colour in legend for label, colour in colours.items())
    assert "blend words" in item["castle"].toolTip() and "2" in item["meadow"].toolTip()


@pytest.mark.parametrize("size", [(1400, 900), (1280, 800)])
def test_what_a_click_on_a_chip_does_and_the_legend_show_without_scrolling(qtbot, window, photo, size):
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    settle(qtbot, window, size)
    prompts = window.prompts
    for label in (prompts.role, prompts.purpose, prompts.legend):
        viewport = label.parentWidget().parentWidget()  # the rows' scroll area's viewport
        box = QRect(label.mapTo(viewport, QPoint(0, 0)), label.size())
        assert viewport.rect().contains(box), (type(label).__name__, box, viewport.rect())


# --------------------------------------------------------------------------------------------------
# Item 10 and sharp edits: the feather and the area beside the mask tools, the crop on the canvas


@pytest.fixture
def big_photo(tmp_path):
    path = tmp_path / "photos" / "wide.png"
    path.parent.mkdir()
    Image.new("RGB", (1536, 1024), (90, 140, 200)).save(path)
    return path


def test_the_feather_and_area_reach_the_request_and_the_crop_is_outlined(qtbot, window, big_photo, tmp_path):
    from gui.project_io import build_request
    from pipeline.area import choose_crop

    assert window.open_path(big_photo)
    tools, canvas = window.tools, window.canvas
    mask = np.zeros((1024, 1536), np.uint8)
    mask[400:560, 900:1100] = 255
    window.doc.replace_mask("edit_mask", mask, "Paint")
    expected = choose_crop(None, [mask >= 128], (1536, 1024), 128, 32, 4)  # the demo model works at 128 px
    assert canvas.crop_item.isVisible() and canvas.planned_crop() == expected
    rect = canvas.crop_item.rect()
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == expected
    tools.feather.setValue(7)
    tools.padding.setValue(48)
    request = build_request(window.doc.project_path, window.doc.snapshot(), window.settings.request_options(), tmp_path)
    assert (request.feather, request.area_padding, request.area) == (7, 48, None)
    assert canvas.planned_crop() == choose_crop(None, [mask >= 128], (1536, 1024), 128, 48, 7)
    tools.area.setCurrentIndex(tools.area.findData("whole"))
    assert build_request(window.doc.project_path, window.doc.snapshot(), window.settings.request_options(),
                         tmp_path).area == "whole"
    assert not canvas.crop_item.isVisible() and canvas.planned_crop() is None
    tools.area.setCurrentIndex(tools.area.findData(""))

    set_run(window, running=True, serial=window.session.run.serial + 1)  # a run starts: its previews are of the crop
    canvas.show_step(Image.new("RGB", (128, 128), (250, 0, 0)))
    left, top, right, bottom = canvas.run_crop
    shown = canvas.result_item.sceneBoundingRect()
    assert (shown.left(), shown.top(), shown.width(), shown.height()) == (left, top, right - left, bottom - top)
    set_run(window, running=False)
    canvas.show_step(None)


def test_the_wheel_over_the_tools_panel_does_not_change_the_brush(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    size = window.tools.size.value()
    wheel(window.tools.size, window.tools.size.rect().center(), 3)
    assert window.tools.size.value() == size and window.canvas.brush_size == size
    assert view_point(window, 0, 0) is not None
