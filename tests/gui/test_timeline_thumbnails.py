"""The timeline's thumbnails: as many as fit, none covering another, both ends of every row shown (the
inversion's row runs right to left), however many steps the run has."""

from __future__ import annotations

import pytest

from tests.gui.test_timeline import EDIT, INVERT, finished_run


@pytest.mark.parametrize("steps, width", [(40, 700), (50, 1500), (200, 900)])
def test_thumbnails_fill_each_row_without_covering_one_another(qtbot, window, photo, fake_engine, steps, width):
    timeline = finished_run(qtbot, window, photo, fake_engine, steps=steps)
    timeline.resize(width, timeline.height())
    thumb_w = timeline._thumb(EDIT, 1).width()
    for stage in (INVERT, EDIT):
        shown = timeline.shown_steps(stage)
        assert shown[0] == 1 and shown[-1] == steps, shown
        lefts = sorted(timeline._thumb_x(stage, step, steps, thumb_w) for step in shown)
        assert min(b - a for a, b in zip(lefts, lefts[1:])) >= thumb_w + 2, (stage, lefts)
        assert len(shown) > timeline._strip()[1] / (2 * (thumb_w + 2))  # at least half as many as could fit
