"""One full flow against the real engine and the tiny demo model (`demo-tiny`, set in the settings): the
window, the worker thread, the engine's stages, the project on disk, re-editing without re-inversion,
cancelling a real run, and reopening the project in a new window to edit again without re-inverting."""

from __future__ import annotations

import pytest

from gui.worker import real_engine
from pipeline.events import CancelledEvent, Done
from tests.gui.conftest import SOURCE, TARGET, make_window
from tests.gui.test_window import open_photo, run_and_wait, type_prompts


@pytest.mark.slow
def test_demo_model_edit_re_edit_and_cancel(qtbot, settings, photo):
    settings.set("model", "demo-tiny")
    settings.set("max_side", 64)
    window = make_window(qtbot, settings, engine_factory=real_engine)
    try:
        open_photo(qtbot, window, photo)
        type_prompts(qtbot, window)
        window.method.editors["steps"].spin.setValue(5)
        window.method.editors["inner_steps"].spin.setValue(1)
        window.method.editors["inversion"].combo.setCurrentText("null-text")  # this CPU starts p2p with direct
        final = run_and_wait(qtbot, window, timeout=300_000)
        assert isinstance(final, Done), final
        assert not final.reused_inversion
        run = window.session.run
        for stage in ("DDIM inversion", "null-text inversion", "editing"):  # a preview at every step
            assert sorted(run.previews[stage]) == [1, 2, 3, 4, 5], stage
        timeline = window.timeline  # each row by noise level: DDIM inversion climbs, the others descend
        stages = ("DDIM inversion", "null-text inversion", "editing")
        assert [timeline.climbs(stage) for stage in stages] == [True, False, False]
        for k in range(1, 6):  # steps at the same timestep line up
            assert run.timesteps["DDIM inversion"][k] == run.timesteps["null-text inversion"][6 - k]
            x = [timeline.step_fraction(stage, k if stage == stages[0] else 6 - k, 5) for stage in stages]
            assert max(x) - min(x) < 1e-9, x
        window.timeline.choose("editing", 2)  # scrubbing: a full decode of that step, on the worker thread
        qtbot.waitUntil(lambda: ("editing", 2) in run.decoded, timeout=60_000)
        full = run.decoded[("editing", 2)]
        assert window.canvas.override is full and full.size == (64, 64)
        from pipeline.engine import Engine

        engine = Engine()
        expected = engine.decode(engine.preload("demo-tiny"), run.latents["editing"][2])
        assert full.tobytes() == expected.tobytes()  # that step's latent, decoded in full
        window.timeline.back_to_result()
        assert len(window.session.results) == 1 and window.status_inversion.text() == "Inversion: 1 stored"
        assert "loaded" in window.status_model.text()

        type_prompts(qtbot, window, SOURCE, "a house in a meadow under a red sky")
        final = run_and_wait(qtbot, window, timeout=300_000)
        assert isinstance(final, Done) and final.reused_inversion  # the edit only
        assert len(window.session.results) == 2

        window.method.editors["steps"].spin.setValue(50)  # an inversion parameter: a new inversion
        with qtbot.waitSignal(window.session.runFinished, timeout=300_000) as blocker:
            assert window.run_edit()
            qtbot.waitUntil(lambda: window.session.run.step >= 1 and "inversion" in window.session.run.stage,
                            timeout=120_000)
            window.cancel_run()
        assert isinstance(blocker.args[0], CancelledEvent)
        assert len(window.session.results) == 2 and window.session.inversions == 1  # as before the run
        assert window.doc.target_prompt != TARGET
        project = window.doc.project_path
    finally:
        window.doc.undo.setClean()
        window.close()

    reopened = make_window(qtbot, settings, engine_factory=real_engine)  # a new engine: nothing in memory
    try:
        assert reopened.open_path(project)
        assert reopened.doc.params["steps"] == 5 and reopened.doc.source_prompt == SOURCE
        type_prompts(qtbot, reopened, SOURCE, TARGET)
        final = run_and_wait(qtbot, reopened, timeout=300_000)
        assert isinstance(final, Done) and final.reused_inversion
        assert len(reopened.session.results) == 3 and reopened.session.inversions == 1
    finally:
        reopened.doc.undo.setClean()
        reopened.close()


def test_a_missing_model_is_reported_and_the_window_keeps_working(qtbot, settings, photo, tmp_path):
    settings.set("model", str(tmp_path / "no-such-model"))
    window = make_window(qtbot, settings, engine_factory=real_engine)
    try:
        qtbot.waitUntil(lambda: window.session.model_state == "not loaded", timeout=60_000)
        assert window.message.isVisible() and "no-such-model" in window.message.details
        open_photo(qtbot, window, photo)
        type_prompts(qtbot, window)
        final = run_and_wait(qtbot, window, timeout=60_000)
        assert type(final).__name__ == "Failed" and window.message.isVisible()
        window.actions["mask_fill"].trigger()  # still editable
        assert window.doc.masks["edit_mask"].all() and window.actions["run"].isEnabled()
    finally:
        window.doc.undo.setClean()
        window.close()
