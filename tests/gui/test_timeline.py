"""The timeline driven like a user against the FakeEngine: a preview at every step of the inversion and
the edit, scrubbing shows a step's cheap preview at once and its full decode (made on the worker
thread) when it arrives, the keyboard steps through the run, and every registered method's step
bands can be dragged."""

from __future__ import annotations

import threading

from PySide6.QtCore import QPoint, Qt

from gui.timeline import LANE_H, PAD, ROW_H
from pipeline.events import Done
from tests.gui.test_window import open_photo, run_and_wait, type_prompts

EDIT, INVERT = "editing", "DDIM inversion"


def row_point(timeline, stage: str, fraction: float) -> QPoint:
    row = timeline.stages().index(stage)
    return QPoint(int(timeline.x_of(fraction)), PAD + row * ROW_H + ROW_H // 2)


def red(image) -> int:
    return image.getpixel((0, 0))[0]


def decoded_step(window):
    """The step whose full decode the canvas shows (the fake's decode is red = 5 x latent value)."""
    override = window.canvas.override
    return None if override is None or override.size != (128, 96) else red(override) // 5


def finished_run(qtbot, window, photo, fake_engine, steps=8):
    fake_engine.steps = steps
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    assert isinstance(run_and_wait(qtbot, window), Done)
    timeline = window.timeline
    timeline.resize(700, timeline.sizeHint().height())
    return timeline


def test_every_step_of_the_inversion_and_the_edit_sends_a_preview_with_its_latent(qtbot, window, photo, fake_engine):
    timeline = finished_run(qtbot, window, photo, fake_engine, steps=40)
    request = fake_engine.requests[-1]
    assert request.preview_every == 1
    run = window.session.run
    for stage in (INVERT, EDIT):
        assert sorted(run.previews[stage]) == list(range(1, 41))
        assert sorted(run.latents[stage]) == list(range(1, 41))
    assert timeline.stages() == [INVERT, EDIT]
    shown = timeline.shown_steps(EDIT)
    assert 2 < len(shown) < 40 and shown[0] == 1 and shown[-1] == 40  # as many thumbnails as fit
    widths = timeline._thumb(EDIT, 1).width()
    assert len(shown) * widths <= timeline._strip()[1]
    timeline.grab()  # paints without error, with the inversion drawn right to left


def test_scrubbing_shows_the_preview_at_once_then_the_full_decode_from_the_worker(qtbot, window, photo, fake_engine):
    timeline = finished_run(qtbot, window, photo, fake_engine)
    threads = []
    original = fake_engine.decode
    fake_engine.decode = lambda bundle, latent: threads.append(threading.current_thread()) or original(bundle, latent)
    fake_engine.decode_delay = 0.2
    qtbot.mousePress(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, EDIT, 0.5))
    stage, step = timeline.chosen
    assert stage == EDIT and step == 4
    assert window.canvas.override is window.session.run.previews[EDIT][4]  # the cheap preview, at once
    qtbot.waitUntil(lambda: decoded_step(window) == 14, timeout=5000)  # edit step 4's latent is 14
    assert threads == [threads[0]] and threads[0] is not threading.main_thread()
    qtbot.mouseRelease(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, EDIT, 0.5))
    assert window.session.decode_latencies_s and window.session.decode_latencies_s[-1] >= 0.2

    # the inversion row is drawn right to left: its first step sits at the right end
    qtbot.mouseClick(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, INVERT, 1.0))
    assert timeline.chosen == (INVERT, 1)
    qtbot.waitUntil(lambda: decoded_step(window) == 1, timeout=5000)

    # a step decoded before is shown in full at once, without decoding again
    count = len(fake_engine.decodes)
    qtbot.mouseClick(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, EDIT, 0.5))
    assert decoded_step(window) == 14 and len(fake_engine.decodes) == count

    qtbot.mouseDClick(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, EDIT, 0.5))
    assert timeline.chosen is None and window.canvas.override is None  # back to the result


def test_dragging_fast_decodes_only_the_step_it_stops_on(qtbot, window, photo, fake_engine):
    timeline = finished_run(qtbot, window, photo, fake_engine, steps=20)
    fake_engine.decode_delay = 0.3
    qtbot.mousePress(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, EDIT, 0.0))
    for i in range(1, 21):
        qtbot.mouseMove(timeline, row_point(timeline, EDIT, i / 20))
        assert window.canvas.override is window.session.run.previews[EDIT][timeline.chosen[1]]
    qtbot.mouseRelease(timeline, Qt.MouseButton.LeftButton, pos=row_point(timeline, EDIT, 1.0))
    assert timeline.chosen == (EDIT, 20)
    qtbot.waitUntil(lambda: decoded_step(window) == 30, timeout=5000)
    qtbot.wait(800)  # time for more decodes, were any still queued
    assert len(fake_engine.decodes) <= 3 and fake_engine.decodes[-1] == 30  # not one per step passed over


def test_during_a_run_a_chosen_step_stays_and_is_decoded_in_full_between_two_steps(qtbot, window, photo, fake_engine):
    fake_engine.steps, fake_engine.delay = 12, 0.05
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    timeline = window.timeline
    with qtbot.waitSignal(window.session.runFinished, timeout=20_000):
        assert window.run_edit()
        qtbot.waitUntil(lambda: len(window.session.run.previews.get(INVERT, {})) >= 3, timeout=10_000)
        assert window.canvas.override is not None  # the canvas follows the run's previews
        timeline.choose(INVERT, 2)
        assert window.canvas.override is window.session.run.previews[INVERT][2]
        qtbot.waitUntil(lambda: decoded_step(window) == 2, timeout=10_000)  # its full decode, the run going on
        assert window.engine.busy and fake_engine.decodes == [2.0]
        qtbot.waitUntil(lambda: len(window.session.run.previews.get(EDIT, {})) >= 2, timeout=10_000)
        assert decoded_step(window) == 2  # still pinned while the run goes on
    assert timeline.chosen is None and window.canvas.override is None  # the result is shown
    assert (INVERT, 2) in window.session.run.decoded and fake_engine.decodes == [2.0]  # kept, made once


def test_keys_step_through_the_run_and_back_to_the_result(qtbot, window, photo, fake_engine):
    timeline = finished_run(qtbot, window, photo, fake_engine, steps=3)
    window.activateWindow()
    window.actions["step_prev"].trigger()
    assert timeline.chosen == (EDIT, 3)  # from the result: the run's last step
    for expected in [(EDIT, 2), (EDIT, 1), (INVERT, 3), (INVERT, 2)]:
        qtbot.keyClick(window, Qt.Key.Key_Comma)
        assert timeline.chosen == expected
    qtbot.keyClick(window, Qt.Key.Key_Period)
    assert timeline.chosen == (INVERT, 3)
    qtbot.keyClick(window, Qt.Key.Key_R)
    assert timeline.chosen is None and window.canvas.override is None


def test_every_registered_method_s_step_bands_can_be_dragged(qtbot, window, photo):
    """Whatever the registry lists: each step range's end and each step fraction's tick moves with
    the mouse, the form follows, and one undo puts it back."""
    from pipeline.methods.registry import method_ids

    open_photo(qtbot, window, photo)
    timeline = window.timeline
    for method_id in method_ids():
        window.doc.set_method(method_id)
        timeline.resize(800, timeline.sizeHint().height())
        for lane, spec in enumerate(timeline.specs):
            y = int(timeline._lanes_top() + lane * LANE_H + LANE_H // 2)
            before = window.doc.params[spec.name]
            if spec.kind == "step_fraction":
                grab = float(before)
                target = 0.5 if abs(grab - 0.5) > 0.1 else 0.9
            else:
                start, end = (float(v) for v in before)
                if end - start > 0.1:
                    grab, target = end, (start + end) / 2  # the end, towards the middle
                elif end < 0.7:
                    grab, target = end, end + 0.3  # ends together: dragging right moves the end
                else:
                    grab, target = start, start - 0.3  # ... and dragging left the start
            x, to = int(timeline.x_of(grab)), int(timeline.x_of(target))
            qtbot.mousePress(timeline, Qt.MouseButton.LeftButton, pos=QPoint(x, y))
            qtbot.mouseMove(timeline, QPoint((x + to) // 2, y))
            qtbot.mouseMove(timeline, QPoint(to, y))
            qtbot.mouseRelease(timeline, Qt.MouseButton.LeftButton, pos=QPoint(to, y))
            after = window.doc.params[spec.name]
            editor = window.method.editors[spec.name]
            if spec.kind == "step_fraction":
                assert abs(after - target) < 0.01 and abs(editor.spin.value() - after) < 1e-3, (method_id, spec.name)
            else:
                moved = after[1] if after[1] != before[1] else after[0]
                kept = after[0] if after[1] != before[1] else after[1]
                assert abs(moved - target) < 0.01 and kept == before[[0, 1][after[1] == before[1]]], (
                    method_id, spec.name, before, after)
                assert abs(editor.start.value() - after[0]) < 0.01 and abs(editor.end.value() - after[1]) < 0.01
            window.actions["undo"].trigger()
            assert window.doc.params[spec.name] == before, (method_id, spec.name)
