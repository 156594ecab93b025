"""Pictures for Qt: PIL images and masks as QImage/QPixmap (copies, so numpy buffers can go away), and a
mask's outline as a path (the canvas draws it over results, where a colour fill would tint them).

QImage and QPainterPath may be made on any thread, a QPixmap only on the UI thread. So what the
project-I/O thread reads for the screen (the photo, a result, the masks of a project) it also turns
into QImages and paths there (`Shown`), and the canvas only wraps them in pixmaps: opening a large
photo costs the UI thread a copy, not a conversion.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image
from PySide6.QtGui import QColor, QImage, QPainterPath, QPixmap

from gui.theme import MASK_COLOUR

MASK_THRESHOLD = 128  # what the pipeline counts as inside a mask (pipeline.images.mask_tensor)
MAX_OUTLINE_RUNS = 40_000  # beyond this many edge runs the outline is traced on a coarser grid


class Shown:
    """A photo and masks made ready for the screen off the UI thread, looked up by the identity of the
    PIL image or mask array they show (each entry keeps its object, so the identity is not reused; a
    mask also keeps a checksum of its pixels, so one painted on since is made again)."""

    def __init__(self, pictures: tuple[Image.Image, ...] = (), masks: tuple[np.ndarray, ...] = ()) -> None:
        """Prepare `pictures` and `masks` (their fill in MASK_COLOUR, the canvas's) now, on this thread."""
        self._pictures = {id(p): (p, to_qimage(p)) for p in pictures}
        self._masks = {id(m): (m, _checksum(m), mask_overlay(m, MASK_COLOUR), mask_outline(m)) for m in masks}

    def pixmap(self, picture: Image.Image) -> QPixmap | None:
        """`picture` as a pixmap if it was prepared, else None."""
        ready = self._pictures.get(id(picture))
        return QPixmap.fromImage(ready[1]) if ready is not None and ready[0] is picture else None

    def mask(self, mask: np.ndarray) -> tuple[QImage, QPainterPath] | None:
        """The fill and the outline of `mask` if it was prepared as it is now, else None."""
        ready = self._masks.get(id(mask))
        return (ready[2], ready[3]) if ready is not None and ready[0] is mask and ready[1] == _checksum(mask) else None


def _checksum(mask: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(mask))


def to_qimage(image: Image.Image) -> QImage:
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), np.uint8))
    height, width, _ = rgb.shape
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def to_pixmap(image: Image.Image) -> QPixmap:
    return QPixmap.fromImage(to_qimage(image))


def mask_overlay(mask: np.ndarray, colour: QColor, opacity: float = 0.5) -> QImage:
    """The mask as a translucent colour layer (premultiplied ARGB), through a table of its 256 levels."""
    height, width = mask.shape
    alpha = (np.arange(256, dtype=np.float32) * opacity).astype(np.uint8)
    table = np.empty((256, 4), np.uint8)
    for i, channel in enumerate((colour.red(), colour.green(), colour.blue())):
        table[:, i] = (alpha.astype(np.uint16) * channel // 255).astype(np.uint8)
    table[:, 3] = alpha
    rgba = np.ascontiguousarray(table[mask])
    return QImage(rgba.data, width, height, 4 * width, QImage.Format.Format_RGBA8888_Premultiplied).copy()


def mask_outline(mask: np.ndarray) -> QPainterPath:
    """The border of the mask's inside (>= MASK_THRESHOLD) along pixel edges, in pixel coordinates.

    Each straight run of edge between an inside and an outside pixel is one subpath. A mask so ragged
    that it has more than MAX_OUTLINE_RUNS runs (noise) is traced on a grid of 2, 4, ... pixels, a
    block counting as inside when any of its pixels is, so building the path never freezes the window.
    """
    inside = mask >= MASK_THRESHOLD
    scale = 1
    while True:
        runs = _edge_runs(inside)
        if sum(len(starts) for starts, _, _ in runs) <= MAX_OUTLINE_RUNS:
            break
        scale *= 2
        height, width = inside.shape
        padded = np.pad(inside, ((0, -height % 2), (0, -width % 2)))
        inside = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).any(axis=(1, 3))
    path = QPainterPath()
    (h_starts, h_ends, h_rows), (v_starts, v_ends, v_cols) = runs
    for x0, x1, y in zip((h_starts * scale).tolist(), (h_ends * scale).tolist(), (h_rows * scale).tolist()):
        path.moveTo(x0, y)
        path.lineTo(x1, y)
    for y0, y1, x in zip((v_starts * scale).tolist(), (v_ends * scale).tolist(), (v_cols * scale).tolist()):
        path.moveTo(x, y0)
        path.lineTo(x, y1)
    return path


def _edge_runs(inside: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """The maximal straight runs of pixel edge with inside on one side only: (starts, ends, rows) of the
    horizontal runs (from x = start to x = end on line y = row), then (starts, ends, columns) of the
    vertical ones."""
    runs = []
    for grid in (inside, inside.T):
        rows, cols = grid.shape
        edges = np.zeros((rows + 1, cols), bool)  # edges[y, x]: the unit edge from (x, y) to (x + 1, y)
        edges[:-1] = grid
        edges[1:] ^= grid
        change = np.diff(np.pad(edges, ((0, 0), (1, 1))).astype(np.int8), axis=1)
        line, starts = np.nonzero(change == 1)
        _, ends = np.nonzero(change == -1)  # row-major order pairs each run's end with its start
        runs.append((starts, ends, line))
    return tuple(runs)


def from_qimage(image: QImage) -> Image.Image:
    """A pasted or dropped QImage as an RGB PIL image."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height = rgb.width(), rgb.height()
    data = np.frombuffer(rgb.constBits(), np.uint8).reshape(height, rgb.bytesPerLine())[:, : 3 * width]
    return Image.fromarray(data.reshape(height, width, 3).copy(), "RGB")
