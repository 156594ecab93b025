"""A fixed-seed fuzz of restoring settings from tampered result PNGs through the real window
(scripts/fuzz_png_restore.py runs the same fuzzer on 5,000 and more)."""

from __future__ import annotations

from scripts.fuzz_png_restore import fuzz, window_with_a_result

CASES = 300


def test_tampered_pngs_escape_nothing_change_nothing_refused_and_write_nothing_outside(qtbot, tmp_path):
    window = window_with_a_result(tmp_path)
    try:
        counts = fuzz(window, tmp_path, CASES, seed=20261205)
    finally:
        window.doc.undo.setClean()
        window.close()
    assert counts.cases == CASES and counts.ok, counts.summary()
    # the cases reach both outcomes: restores that take something, and ones that name what they refuse
    assert counts.restored > CASES // 3 and counts.messages > CASES // 3 and counts.writes_inside >= CASES
