"""Live drafts (issue 21; gui.drafts, the session's drafts, Engine.draft): after a pause, a change is drafted
from the stored inversion, shown badged as a draft, never written into the project, never inverted for,
never painted once stale; Run saves the draft on screen as the result (and computes after any change)."""

from __future__ import annotations

import threading

import pytest

from gui.drafts import DELAY_MS
from pipeline.events import CancelledEvent, Drafted, Failed
from tests.gui.conftest import make_window
from tests.gui.fakes import FakeEngine, draft_colour
from tests.gui.test_window import open_photo, run_and_wait, type_prompts
from tests.helpers import tree_digest

WAIT_MS = 10_000


def colour_of(image) -> tuple[int, int, int]:
    return image.getpixel((0, 0))


def edited_once(qtbot, window, photo, drafts: str = "on"):
    """The photo opened, its prompts typed and one edit run (so an inversion is stored); drafts `drafts`."""
    window.settings.set("live_drafts", drafts)
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    assert run_and_wait(qtbot, window).__class__.__name__ == "Done"
    qtbot.waitUntil(lambda: window.session.inversions == 1, timeout=WAIT_MS)
    return window.doc.project_path


def slow() -> list[FakeEngine]:
    """A fake engine whose draft takes about 0.3 s (6 steps, 50 ms apart), for the `fake_engine` fixture."""
    return [FakeEngine(steps=6, delay=0.05)]


def test_a_change_is_drafted_after_a_pause_shown_as_a_draft_and_never_written(qtbot, window, photo, fake_engine):
    project = edited_once(qtbot, window, photo)
    before, results, inversions = tree_digest(project), len(window.session.results), fake_engine.inversions_made
    window.doc.set_prompt("target", "a castle in a meadow at night")
    undo_count = window.doc.undo.count()
    assert not fake_engine.drafts  # not at once: after the pause
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    assert len(fake_engine.drafts) == 1 and fake_engine.drafts[0].target_prompt == "a castle in a meadow at night"
    assert colour_of(window.canvas.draft) == draft_colour("a castle in a meadow at night")
    assert window.canvas.draft_badge.isVisible() and "Draft" in window.canvas.draft_badge.text()
    assert window.status_draft.text().startswith("Draft (") and "not saved" in window.status_draft.text()
    # nothing written: no commit, no result file, no inversion, no undo entry
    assert tree_digest(project) == before and len(window.session.results) == results
    assert fake_engine.inversions_made == inversions and window.doc.undo.count() == undo_count


def test_typing_drafts_once_after_the_last_key(qtbot, window, photo, fake_engine):
    edited_once(qtbot, window, photo)
    for text in ("a castle", "a castle in", "a castle in a", "a castle in a fog"):
        window.doc.set_prompt("target", text)
        qtbot.wait(DELAY_MS // 4)
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    qtbot.wait(DELAY_MS)
    assert [request.target_prompt for request in fake_engine.drafts] == ["a castle in a fog"]


def test_no_draft_before_an_inversion_is_stored(qtbot, window, photo, fake_engine):
    window.settings.set("live_drafts", "on")
    open_photo(qtbot, window, photo)
    type_prompts(qtbot, window)
    window.doc.set_prompt("target", "a castle at night")
    qtbot.wait(2 * DELAY_MS)
    assert not fake_engine.drafts and window.canvas.draft is None and not window.canvas.draft_badge.isVisible()


def test_a_change_that_needs_a_new_inversion_is_not_drafted_and_says_so(qtbot, window, photo, fake_engine):
    project = edited_once(qtbot, window, photo)
    before, inversions = tree_digest(project), fake_engine.inversions_made
    assert window.doc.set_param("steps", 20)  # an inversion parameter: another key
    qtbot.waitUntil(lambda: bool(fake_engine.drafts_finished), timeout=WAIT_MS)
    final = fake_engine.drafts_finished[0]
    assert isinstance(final, Failed) and final.kind == "NeedsRun"
    qtbot.waitUntil(lambda: window.status_draft.text().startswith("No draft:"), timeout=WAIT_MS)
    assert "new inversion" in window.status_draft.text() and window.canvas.draft is None
    assert fake_engine.inversions_made == inversions and tree_digest(project) == before


@pytest.mark.parametrize("fake_engine", slow())
def test_a_draft_overtaken_by_a_change_is_cancelled_and_never_painted(qtbot, window, photo, fake_engine, monkeypatch):
    slow_engine = fake_engine
    edited_once(qtbot, window, photo)
    painted: list = []
    show = window.canvas.show_draft
    monkeypatch.setattr(window.canvas, "show_draft", lambda image: painted.append(image) or show(image))
    window.doc.set_prompt("target", "a castle at dawn")
    qtbot.waitUntil(lambda: window.session.drafting and window.session.draft.step >= 1, timeout=WAIT_MS)
    window.doc.set_prompt("target", "a castle at dusk")  # while the first draft is in flight
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    assert isinstance(slow_engine.drafts_finished[0], CancelledEvent)
    assert [request.target_prompt for request in slow_engine.drafts] == ["a castle at dawn", "a castle at dusk"]
    shown = [colour_of(image) for image in painted if image is not None]
    assert shown == [draft_colour("a castle at dusk")]


@pytest.mark.parametrize("fake_engine", slow())
def test_a_draft_that_ends_after_a_change_though_cancelled_is_not_painted(qtbot, window, photo, fake_engine,
                                                                        monkeypatch):
    """The cancel comes too late (the fake ignores it): the draft ends, stale, and is dropped."""
    slow_engine = fake_engine
    edited_once(qtbot, window, photo)
    slow_engine.cancel_ignored = True
    painted: list = []
    show = window.canvas.show_draft
    monkeypatch.setattr(window.canvas, "show_draft", lambda image: painted.append(image) or show(image))
    window.doc.set_prompt("target", "a castle at dawn")
    qtbot.waitUntil(lambda: window.session.drafting and window.session.draft.step >= 1, timeout=WAIT_MS)
    window.doc.set_prompt("target", "a castle at dusk")
    qtbot.waitUntil(lambda: len(slow_engine.drafts_finished) == 2, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    assert isinstance(slow_engine.drafts_finished[0], Drafted)  # it did end, with the old target's picture
    assert [colour_of(image) for image in painted if image is not None] == [draft_colour("a castle at dusk")]


@pytest.mark.parametrize("fake_engine", slow())
def test_run_during_a_draft_stops_it_then_makes_the_result(qtbot, window, photo, fake_engine):
    slow_engine = fake_engine
    project = edited_once(qtbot, window, photo)
    window.doc.set_prompt("target", "a castle at dawn")
    qtbot.waitUntil(lambda: window.session.drafting, timeout=WAIT_MS)
    with qtbot.waitSignal(window.session.runFinished, timeout=WAIT_MS) as finished:
        assert window.run_edit()
        assert window.session.running and window.actions["cancel"].isEnabled()
    assert finished.args[0].__class__.__name__ == "Done"
    assert isinstance(slow_engine.drafts_finished[-1], CancelledEvent)
    assert slow_engine.requests[-1].target_prompt == "a castle at dawn"
    assert window.canvas.draft is None and not window.canvas.draft_badge.isVisible()
    assert len(window.session.results) == 2 and (project / "project.json").is_file()


def test_auto_drafts_are_off_on_a_cpu(qtbot, window, photo, fake_engine):
    edited_once(qtbot, window, photo, drafts="auto")  # the engine's status: this machine's CPU
    assert not window.drafts.enabled() and not window.actions["live_drafts"].isChecked()
    window.doc.set_prompt("target", "a castle at noon")
    qtbot.wait(2 * DELAY_MS)
    assert not fake_engine.drafts and window.canvas.draft is None


def test_auto_drafts_are_on_with_a_gpu_and_run_live_drafts_turns_them_off(qtbot, settings, fake_engine,
                                                                         stub_segmenter, photo, monkeypatch):
    monkeypatch.setattr("gui.worker.device_summary", lambda device=None: {
        "device": "NVIDIA H100 80GB HBM3 (cuda:0)", "memory": "GPU memory: 1.0 / 80 GiB", "gpu": True})
    window = make_window(qtbot, settings, lambda: fake_engine, lambda: stub_segmenter)
    try:
        edited_once(qtbot, window, photo, drafts="auto")
        assert window.drafts.enabled() and window.actions["live_drafts"].isChecked()
        window.doc.set_prompt("target", "a castle at midnight")
        qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
        window.actions["live_drafts"].trigger()  # Run > Live drafts: off, from now on
        assert window.settings.get("live_drafts") == "off" and window.canvas.draft is None
        assert not window.canvas.draft_badge.isVisible() and not window.actions["live_drafts"].isChecked()
        window.doc.set_prompt("target", "a castle at sunrise")
        qtbot.wait(2 * DELAY_MS)
        assert len(fake_engine.drafts) == 1
    finally:
        window.doc.undo.setClean()
        window.close()


def test_choosing_a_result_in_the_history_takes_the_draft_off(qtbot, window, photo, fake_engine):
    edited_once(qtbot, window, photo)
    window.doc.set_prompt("target", "a castle in the snow")
    assert run_and_wait(qtbot, window).__class__.__name__ == "Done"
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=WAIT_MS)
    window.doc.set_prompt("target", "a castle in the rain")
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    window.history.list.setCurrentRow(0)  # the first result
    qtbot.waitUntil(lambda: window.session.result_image is not None, timeout=WAIT_MS)
    assert window.canvas.draft is None and not window.canvas.draft_badge.isVisible()
    assert window.status_draft.text() == ""


def test_no_draft_while_a_model_choice_loads(qtbot, window, photo, fake_engine, tmp_path):
    """A draft then would load the model in use again, in the way of the one being tried (Run waits too)."""
    edited_once(qtbot, window, photo)
    fake_engine.preload_gate = threading.Event()  # the load takes its time
    window.use_model(str(tmp_path / "sd15"))
    qtbot.waitUntil(lambda: window.session.model_state == "loading…", timeout=WAIT_MS)
    window.doc.set_prompt("target", "a castle at dusk")
    qtbot.wait(2 * DELAY_MS)
    assert not fake_engine.drafts
    fake_engine.preload_gate.set()
    qtbot.waitUntil(lambda: window.model_choice.pending is None, timeout=WAIT_MS)
    window.doc.set_prompt("target", "a castle at dawn")
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    assert [request.model for request in fake_engine.drafts] == [str(tmp_path / "sd15")]


def test_run_after_the_draft_saves_the_draft_as_the_result_and_says_so(qtbot, window, photo, fake_engine):
    """The draft is the result a Run of the same settings commits: Run saves it without computing again."""
    project = edited_once(qtbot, window, photo)
    window.doc.set_prompt("target", "a castle at noon")
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    inversions = fake_engine.inversions_made
    final = run_and_wait(qtbot, window)
    assert final.__class__.__name__ == "Done" and final.from_draft
    assert fake_engine.requests[-1].target_prompt == "a castle at noon"
    assert "saved from the draft" in window.status_stage.text() and "not computed again" in window.status_stage.text()
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.session.result_image is not None, timeout=WAIT_MS)
    assert colour_of(window.session.result_image) == draft_colour("a castle at noon")  # the draft's picture, saved
    assert window.session.results[-1].path.parent.parent == project
    assert window.canvas.draft is None and fake_engine.inversions_made == inversions


def test_run_after_a_change_since_the_draft_computes_the_result(qtbot, window, photo, fake_engine):
    """A draft of other settings is never saved: Run computes, and says so as for any run."""
    edited_once(qtbot, window, photo)
    window.doc.set_prompt("target", "a castle at noon")
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    window.doc.set_prompt("target", "a castle at night")  # Run before the next draft
    final = run_and_wait(qtbot, window)
    assert final.__class__.__name__ == "Done" and not final.from_draft
    assert "done in" in window.status_stage.text()
    qtbot.waitUntil(lambda: window.session.result_image is not None and len(window.session.results) == 2,
                    timeout=WAIT_MS)
    assert colour_of(window.session.result_image) != draft_colour("a castle at noon")


def test_the_engine_forgets_a_project_the_window_no_longer_shows(qtbot, window, photo, fake_engine, tmp_path):
    edited_once(qtbot, window, photo)
    forgotten = fake_engine.forgotten
    other = tmp_path / "other.png"
    other.write_bytes(photo.read_bytes())
    window.doc.undo.setClean()  # no question about saving the typed prompts
    assert window.open_path(other)
    qtbot.waitUntil(lambda: fake_engine.forgotten > forgotten, timeout=WAIT_MS)


LONG = " ".join(["a castle"] * 12)  # 24 words: past the fake engine's 20-word window


def test_a_drafts_notice_is_shown_once_not_for_every_draft(qtbot, window, photo, fake_engine):
    """A draft's notices (a prompt longer than the text window) are shown as a run's are, in the message
    bar; the drafts after it that say the same do not show it again, until a draft without it."""
    edited_once(qtbot, window, photo)
    said: list = []
    window.session.noticed.connect(said.append)
    window.doc.set_prompt("target", LONG)
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    assert len(said) == 1 and "longer than the text encoder" in said[0]
    assert window.message.isVisible() and "these words are ignored" in window.message.text.text()
    window.message.hide()
    for end in (0.4, 0.5):  # two more drafts of the same long prompt
        drafts = len(fake_engine.drafts_finished)
        assert window.doc.set_param("cross_replace", [0.0, end])
        qtbot.waitUntil(lambda: len(fake_engine.drafts_finished) > drafts and not window.session.drafting,
                        timeout=WAIT_MS)
    assert len(said) == 1 and not window.message.isVisible()
    window.doc.set_prompt("target", "a castle")
    qtbot.waitUntil(lambda: window.canvas.draft is not None and colour_of(window.canvas.draft) == draft_colour(
        "a castle"), timeout=WAIT_MS)
    window.doc.set_prompt("target", LONG)  # the same words cut again, after a draft that cut none
    qtbot.waitUntil(lambda: len(said) == 2, timeout=WAIT_MS)
    assert said[1] == said[0] and window.message.isVisible()


def test_run_on_the_draft_on_screen_announces_no_long_run(qtbot, window, photo, fake_engine):
    """Saving the draft takes no time: the 'This run takes about 4 min' warning a long run gets is not given."""
    edited_once(qtbot, window, photo)
    window.session.unet_seconds = 1.0  # an edit alone would take minutes
    window.doc.set_prompt("target", "a castle at noon")
    qtbot.waitUntil(lambda: window.canvas.draft is not None, timeout=WAIT_MS)
    window.message.hide()
    assert run_and_wait(qtbot, window).from_draft
    assert not window.message.isVisible()
    window.session.unet_seconds = 1.0
    window.doc.set_prompt("target", "a castle at dusk")  # no draft of it yet: a run, announced
    assert not run_and_wait(qtbot, window).from_draft
    assert window.message.text.text().startswith("This run takes about")
