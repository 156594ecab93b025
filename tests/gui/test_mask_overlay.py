"""How the canvas shows a mask: filled where the artist paints on the photo, only outlined over a result
(so its colours are not tinted), hidden by View > Show mask (M). The canvas scene is rendered at one
scene unit per pixel and read back pixel by pixel."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QImage, QPainter

from gui.canvas import Tool
from gui.qimage import MAX_OUTLINE_RUNS, mask_outline
from gui.theme import MASK_COLOUR
from gui.window import MainWindow
from tests.gui.test_window import open_photo, run_and_wait, type_prompts, view_point

BOX = (200, 150, 400, 300)  # the painted mask: left, top, right, bottom (exclusive) in photo pixels
MARGIN = 4  # pixels kept clear of the outline, which is 3 screen pixels wide on the mask's border


def render(window: MainWindow) -> np.ndarray:
    """The canvas scene over the photo at one scene unit per pixel, as RGB, without the brush's cursor circle
    and the next run's crop outline."""
    canvas = window.canvas
    rect = canvas.source_item.sceneBoundingRect()
    image = QImage(int(rect.width()), int(rect.height()), QImage.Format.Format_RGB888)
    image.fill(Qt.GlobalColor.black)
    shown = [(item, item.isVisible()) for item in (canvas.cursor_item, canvas.crop_item)]
    for item, _ in shown:
        item.hide()
    painter = QPainter(image)
    canvas.scene().render(painter, QRectF(0, 0, image.width(), image.height()), rect)
    painter.end()
    for item, visible in shown:
        item.setVisible(visible)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def interior(pixels: np.ndarray, x0: int = BOX[0], x1: int = BOX[2]) -> np.ndarray:
    """The mask's pixels from column x0 to x1, away from its outline."""
    return pixels[BOX[1] + MARGIN: BOX[3] - MARGIN, x0 + MARGIN: x1 - MARGIN].astype(int)


def tinted(under: np.ndarray) -> np.ndarray:
    """`under` seen through the mask's fill (gui.qimage.mask_overlay of a fully painted pixel; its
    premultiplied colour is rounded down, hence the tests' tolerance of 2)."""
    alpha = int(255 * 0.5) / 255
    colour = np.array([MASK_COLOUR.red(), MASK_COLOUR.green(), MASK_COLOUR.blue()])
    return under * (1 - alpha) + colour * alpha


def paint_box(window: MainWindow) -> None:
    mask = np.zeros((window.doc.image.height, window.doc.image.width), np.uint8)
    x0, y0, x1, y1 = BOX
    mask[y0:y1, x0:x1] = 255
    window.doc.replace_mask("edit_mask", mask, "Paint")


def edit_with_mask(qtbot, window: MainWindow, photo) -> np.ndarray:
    """Open the photo, paint the box, run; the result's pixels."""
    open_photo(qtbot, window, photo)
    paint_box(window)
    type_prompts(qtbot, window)
    run_and_wait(qtbot, window)
    with Image.open(window.session.result().path) as result:
        assert result.size == window.doc.image.size
        return np.asarray(result.convert("RGB")).astype(int)


def test_over_a_result_the_mask_is_only_outlined(qtbot, window, photo):
    result = edit_with_mask(qtbot, window, photo)
    assert window.canvas.tool == Tool.BRUSH  # a mask tool: the outline is for the result, not the tool
    pixels = render(window).astype(int)
    assert np.array_equal(interior(pixels), interior(result))  # the result's colours, untinted
    assert np.array_equal(pixels[:100], result[:100])  # and the same outside the mask
    x0, y0, x1, y1 = BOX
    for band in (pixels[y0 + MARGIN: y1 - MARGIN, x0 - 2: x0 + 2], pixels[y0 - 2: y0 + 2, x0 + MARGIN: x1 - MARGIN]):
        truth = result[y0 + MARGIN: y1 - MARGIN, x0 - 2: x0 + 2] if band.shape[1] == 4 else \
            result[y0 - 2: y0 + 2, x0 + MARGIN: x1 - MARGIN]
        differs = (band != truth).any(axis=2)
        assert differs.any(axis=1 if band.shape[1] == 4 else 0).all()  # the outline crosses every row / column
    # a timeline step is shown as a result is: outlined, not filled
    green = (0, 200, 0)
    window.canvas.show_step(Image.new("RGB", (64, 48), green))
    assert (interior(render(window)) == green).all()


def test_while_painting_the_mask_is_filled(qtbot, window, photo):
    open_photo(qtbot, window, photo)
    paint_box(window)
    source = np.asarray(window.doc.image).astype(int)
    pixels = render(window).astype(int)
    assert np.abs(interior(pixels) - tinted(interior(source))).max() <= 2  # the brush on the photo: filled
    assert np.array_equal(pixels[:100], source[:100])
    type_prompts(qtbot, window)
    run_and_wait(qtbot, window)
    with Image.open(window.session.result().path) as image:
        result = np.asarray(image.convert("RGB")).astype(int)
    canvas = window.canvas
    inside = view_point(window, 300, 220)
    steps = window.doc.undo.count()
    qtbot.mousePress(canvas.viewport(), Qt.MouseButton.LeftButton, pos=inside)  # a stroke over the result
    assert np.abs(interior(render(window).astype(int)) - tinted(interior(result))).max() <= 2
    qtbot.mouseRelease(canvas.viewport(), Qt.MouseButton.LeftButton, pos=inside)
    assert np.array_equal(interior(render(window)), interior(result))  # stroke over: the outline again
    assert window.doc.undo.count() == steps + 1 and window.doc.undo.undoText() == "Paint"  # it was a stroke


def test_compare_split_fills_the_photo_side_and_outlines_the_result_side(qtbot, window, photo):
    result = edit_with_mask(qtbot, window, photo)
    source = np.asarray(window.doc.image).astype(int)
    window.tools.compare.setValue(25)  # result left of x = 160, photo right of it: the mask is all on the photo
    pixels = render(window).astype(int)
    assert np.abs(interior(pixels) - tinted(interior(source))).max() <= 2
    window.tools.compare.setValue(50)  # the split at x = 300 runs through the mask
    pixels = render(window).astype(int)
    assert np.array_equal(interior(pixels, x1=300), interior(result, x1=300))
    assert np.abs(interior(pixels, x0=320) - tinted(interior(source, x0=320))).max() <= 2
    window.set_tool(Tool.PAN)  # no mask tool: outlined on both sides
    pixels = render(window).astype(int)
    assert np.array_equal(interior(pixels, x1=300), interior(result, x1=300))
    assert np.array_equal(interior(pixels, x0=320), interior(source, x0=320))
    window.set_tool(Tool.SEGMENT)  # segmenting makes masks too: filled on the photo
    assert np.abs(interior(render(window).astype(int), x0=320) - tinted(interior(source, x0=320))).max() <= 2


def test_show_mask_hides_fill_and_outline(qtbot, window, photo):
    result = edit_with_mask(qtbot, window, photo)
    action = window.actions["show_mask"]
    assert action in next(m for m in window.menuBar().actions() if m.text() == "&View").menu().actions()
    assert dict(window.shortcut_table())["Show mask"] == "M"
    window.activateWindow()
    outlined = render(window)
    assert not np.array_equal(outlined, result)
    qtbot.keyClick(window, Qt.Key.Key_M)
    assert not action.isChecked() and not window.tools.show_mask.isChecked()
    assert np.array_equal(render(window), result)  # no outline, no fill: the result alone
    inside = view_point(window, 300, 220)
    qtbot.mousePress(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=inside)
    assert np.array_equal(interior(render(window)), interior(result))  # painting a hidden mask shows no fill
    qtbot.mouseRelease(window.canvas.viewport(), Qt.MouseButton.LeftButton, pos=inside)
    window.tools.show_mask.setChecked(True)  # the Tools panel's box: the menu follows
    assert action.isChecked()
    assert np.array_equal(render(window), outlined)


def test_mask_outline_follows_the_pixel_border_of_the_inside():
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:5] = 255
    mask[2, 4] = 127  # below the pipeline's threshold: outside, a notch in the right side
    path = mask_outline(mask)
    assert path.boundingRect() == QRectF(2, 1, 3, 3)
    segments = {((path.elementAt(i).x, path.elementAt(i).y), (path.elementAt(i + 1).x, path.elementAt(i + 1).y))
                for i in range(0, path.elementCount(), 2)}
    assert segments == {((2, 1), (5, 1)), ((4, 2), (5, 2)), ((4, 3), (5, 3)), ((2, 4), (5, 4)),
                        ((2, 1), (2, 4)), ((4, 2), (4, 3)), ((5, 1), (5, 2)), ((5, 3), (5, 4))}
    assert mask_outline(np.zeros((6, 8), np.uint8)).isEmpty()
    noise = (np.random.default_rng(0).random((480, 640)) < 0.3).astype(np.uint8) * 255
    ragged = mask_outline(noise)  # far more runs than the limit: traced on a coarser grid
    assert 0 < ragged.elementCount() <= 2 * MAX_OUTLINE_RUNS
    assert QRectF(0, 0, 640, 480).contains(ragged.boundingRect())
