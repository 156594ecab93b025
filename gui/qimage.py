"""Pictures for Qt: PIL images and masks as QImage/QPixmap (copies, so numpy buffers can go away)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtGui import QColor, QImage, QPixmap


def to_qimage(image: Image.Image) -> QImage:
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), np.uint8))
    height, width, _ = rgb.shape
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def to_pixmap(image: Image.Image) -> QPixmap:
    return QPixmap.fromImage(to_qimage(image))


def mask_overlay(mask: np.ndarray, colour: QColor, opacity: float = 0.5) -> QImage:
    """The mask as a translucent colour layer (premultiplied ARGB)."""
    height, width = mask.shape
    alpha = (mask.astype(np.float32) * opacity).astype(np.uint8)
    rgba = np.empty((height, width, 4), np.uint8)
    for i, channel in enumerate((colour.red(), colour.green(), colour.blue())):
        rgba[..., i] = (alpha.astype(np.uint16) * channel // 255).astype(np.uint8)
    rgba[..., 3] = alpha
    return QImage(rgba.data, width, height, 4 * width, QImage.Format.Format_RGBA8888_Premultiplied).copy()


def from_qimage(image: QImage) -> Image.Image:
    """A pasted or dropped QImage as an RGB PIL image."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height = rgb.width(), rgb.height()
    data = np.frombuffer(rgb.constBits(), np.uint8).reshape(height, rgb.bytesPerLine())[:, : 3 * width]
    return Image.fromarray(data.reshape(height, width, 3).copy(), "RGB")
