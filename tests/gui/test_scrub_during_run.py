"""Scrubbing during a real run (demo-tiny): the step chosen is decoded in full between two steps, on
the engine's thread, and the run's result is the same to the byte as without the decode."""

from __future__ import annotations

import threading

import pytest

from pipeline.engine import Engine
from pipeline.events import Done, Preview, Progress
from tests.gui.conftest import make_window
from tests.gui.test_window import open_photo, run_and_wait, type_prompts

EDIT = "editing"


class PacedEngine(Engine):
    """The real engine, holding its run after editing step 1's preview until the test has scrubbed to
    that step (so the decode has steps left to come between), and noting where each decode fell."""

    def __init__(self) -> None:
        super().__init__()
        self.scrubbed = threading.Event()
        self.hold = False
        self.last_progress: tuple[str, int] | None = None
        self.decoded_at: list[tuple[str, int] | None] = []

    def run(self, request, emit, cancel):
        def paced(event):
            if isinstance(event, Progress):
                self.last_progress = (str(event.stage), event.step)
            emit(event)
            if self.hold and isinstance(event, Preview) and event.stage == EDIT and event.step == 1:
                assert self.scrubbed.wait(60)

        return super().run(request, paced, cancel)

    def decode(self, bundle, latent):
        self.decoded_at.append(self.last_progress)
        return super().decode(bundle, latent)


@pytest.mark.slow
def test_a_step_scrubbed_to_during_a_run_is_decoded_between_steps_and_changes_nothing(qtbot, settings, photo):
    settings.set("model", "demo-tiny")
    settings.set("max_side", 64)
    engine = PacedEngine()
    window = make_window(qtbot, settings, engine_factory=lambda: engine)
    try:
        open_photo(qtbot, window, photo)
        type_prompts(qtbot, window)
        window.method.editors["steps"].spin.setValue(5)
        window.method.editors["inner_steps"].spin.setValue(1)
        assert isinstance(run_and_wait(qtbot, window, timeout=300_000), Done)  # makes and stores the inversion
        plain = run_and_wait(qtbot, window, timeout=300_000)  # an edit on the stored inversion, no scrubbing
        assert isinstance(plain, Done) and plain.reused_inversion
        plain_latents = dict(window.session.run.latents[EDIT])

        engine.hold = True
        order: list[str] = []
        window.engine.decoded.connect(lambda key, image: order.append("decoded"))
        window.session.runFinished.connect(lambda final: order.append("finished"))
        with qtbot.waitSignal(window.session.runFinished, timeout=300_000) as blocker:
            assert window.run_edit()
            qtbot.waitUntil(lambda: 1 in window.session.run.previews.get(EDIT, {}), timeout=120_000)
            window.timeline.choose(EDIT, 1)
            engine.scrubbed.set()
        scrubbed = blocker.args[0]
        assert isinstance(scrubbed, Done) and scrubbed.reused_inversion
        assert order == ["decoded", "finished"]
        assert engine.decoded_at == [(EDIT, 1)]  # right after step 1, before steps 2 to 5
        run = window.session.run
        full = run.decoded[(EDIT, 1)]
        assert full.tobytes() == engine.decode(engine.preload("demo-tiny"), run.latents[EDIT][1]).tobytes()
        assert all(run.latents[EDIT][k].equal(plain_latents[k]) for k in plain_latents)
        assert scrubbed.image.tobytes() == plain.image.tobytes()  # the decode changed nothing in the run
    finally:
        engine.scrubbed.set()
        window.doc.undo.setClean()
        window.close()
