"""Click-to-segment with the real Segment Anything (a small one, tests/tiny_sam.py), as a user does it:
the checkpoint chosen in Settings, clicks and a box on the canvas, the app's own SegmentClient
thread, `load_segmenter`, SamPredictor. Each mask must be what SamPredictor itself answers for the
prompts the canvas sent, and the photo must be embedded once."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui.canvas import Tool
from tests.gui.conftest import make_window
from tests.gui.test_window import open_photo, view_point
from tests.tiny_sam import reference_mask, reference_predictor, write_tiny_sam


@pytest.fixture
def embeddings(monkeypatch):
    """Counts SamPredictor.set_image calls (each one runs the image encoder) in any thread."""
    from segment_anything import SamPredictor

    calls: list[tuple[int, int]] = []
    original = SamPredictor.set_image

    def counted(self, image, *args, **kwargs):
        calls.append(image.shape[:2])
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(SamPredictor, "set_image", counted)
    yield calls


def test_clicks_and_a_box_make_sam_masks_and_the_photo_is_embedded_once(qtbot, settings, fake_engine, photo,
                                                                          tmp_path, embeddings):
    checkpoint, model = write_tiny_sam(tmp_path / "sam")
    settings.set("sam_checkpoint", str(checkpoint))
    settings.set("device", "cpu")
    window = make_window(qtbot, settings, lambda: fake_engine)  # no segmenter_factory: the app's own SAM loader
    try:
        open_photo(qtbot, window, photo)
        picture = window.canvas.picture()
        reference = reference_predictor(model, picture)
        embeddings.clear()  # the reference's own embedding
        window.set_tool(Tool.SEGMENT)
        viewport, canvas = window.canvas.viewport(), window.canvas

        def mask() -> np.ndarray:
            return window.doc.masks["edit_mask"] == 255

        with qtbot.waitSignal(window.doc.maskChanged, timeout=60_000):
            qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 200, 200))
        assert canvas.labels == [1] and canvas._box() is None
        positive = mask()
        assert positive.shape == (picture.height, picture.width)
        assert np.array_equal(positive, reference_mask(reference, canvas.points, [1]))

        with qtbot.waitSignal(window.doc.maskChanged, timeout=30_000):
            qtbot.mouseClick(viewport, Qt.MouseButton.RightButton, pos=view_point(window, 260, 230))
        assert canvas.labels == [1, 0]
        negative = mask()
        assert not np.array_equal(negative, positive)
        assert np.array_equal(negative, reference_mask(reference, canvas.points, [1, 0]))

        with qtbot.waitSignal(window.doc.maskChanged, timeout=30_000):
            qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 150, 150))
            qtbot.mouseMove(viewport, view_point(window, 350, 320))
            qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=view_point(window, 350, 320))
        box = canvas._box()
        assert box is not None and canvas.labels == [1, 0]
        boxed = mask()
        assert np.array_equal(boxed, reference_mask(reference, canvas.points, [1, 0], box))
        assert not np.array_equal(boxed, negative)

        assert embeddings == [(picture.height, picture.width)]  # one embedding for three answers
        window.actions["undo"].trigger()
        assert np.array_equal(mask(), negative)
    finally:
        window.doc.undo.setClean()
        window.close()


class FailingSegmenter:
    def set_image(self, image):
        pass

    def predict(self, points, labels, box=None):
        raise RuntimeError("CUDA out of memory")


def test_a_segmenter_that_fails_is_said_and_the_tool_keeps_working(qtbot, settings, fake_engine, photo):
    window = make_window(qtbot, settings, lambda: fake_engine, FailingSegmenter)
    try:
        open_photo(qtbot, window, photo)
        window.set_tool(Tool.SEGMENT)
        qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 200, 200))
        qtbot.waitUntil(window.message.isVisible, timeout=5000)
        assert window.message.text.text() == "Segmenting failed (RuntimeError: CUDA out of memory); painting still works."
        assert window.status_stage.text() == ""
        window.actions["mask_fill"].trigger()
        assert window.doc.masks["edit_mask"].all()
    finally:
        window.doc.undo.setClean()
        window.close()


def test_sam_runs_on_the_device_chosen_in_settings(qtbot, settings, fake_engine, photo, tmp_path):
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    checkpoint.write_bytes(b"never read: the device is checked first")
    settings.set("sam_checkpoint", str(checkpoint))
    settings.set("device", "cuda:99")
    window = make_window(qtbot, settings, lambda: fake_engine)
    try:
        open_photo(qtbot, window, photo)
        window.set_tool(Tool.SEGMENT)
        qtbot.mouseClick(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, 200, 200))
        qtbot.waitUntil(window.message.isVisible, timeout=5000)
        assert window.message.text.text().startswith("Device 'cuda:99' was requested")
    finally:
        window.doc.undo.setClean()
        window.close()
